"""Output files that appear whole or not at all.

Every output is written to a temporary file next to its destination and renamed into
place only when the whole run succeeded: an interrupted or failed run never leaves a
half-written training file that a later upload would take for a good one.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from types import TracebackType
from typing import Any, TextIO


def dumps(obj: Any) -> str:
    """One JSONL line (UTF-8 text kept readable, key order kept)."""
    return json.dumps(obj, ensure_ascii=False) + "\n"


def _create(target: Path) -> tuple[int, str]:
    """A new temporary file next to ``target``, with the permissions any new file gets
    (0666 less the umask: 0644 under umask 022). ``mkstemp`` would make it 0600, and the
    rename would hand that private mode to the output file."""
    for _ in range(100):
        tmp = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), str(tmp)
        except FileExistsError:
            continue
    raise FileExistsError(f"could not create a temporary file next to {target}")


class AtomicOutputs:
    """A group of output files committed together.

    ``open(path)`` gives a text handle on a temporary file in the destination's folder
    (so the final rename stays on one file system and is atomic); :meth:`commit`
    renames all of them, and leaving the ``with`` block without committing removes
    them.
    """

    def __init__(self) -> None:
        self._files: list[tuple[Path, str, TextIO]] = []
        self.committed = False

    def open(self, path: str | os.PathLike[str]) -> TextIO:
        """A temporary text file that becomes ``path`` on commit."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create(target)
        handle = os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self._files.append((target, tmp, handle))
        return handle

    def forget(self, handle: TextIO) -> None:
        """Give up one of the files: it is removed and will not be committed."""
        for entry in self._files:
            if entry[2] is handle:
                handle.close()
                os.unlink(entry[1])
                self._files.remove(entry)
                return

    def commit(self) -> None:
        """Flush, sync and rename every file into place."""
        for _, _, handle in self._files:
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        for target, tmp, _ in self._files:
            os.replace(tmp, target)
        self.committed = True

    def discard(self) -> None:
        """Remove the temporary files (nothing reaches the destinations)."""
        for _, tmp, handle in self._files:
            handle.close()
            try:
                os.unlink(tmp)
            except FileNotFoundError:
                pass
        self._files = []

    def __enter__(self) -> AtomicOutputs:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if not self.committed:
            self.discard()
