"""Duplicate detection over a stream, in memory that does not grow with the file.

Each example gives a 64-bit fingerprint and its line. Pairs are kept in 64 small
buckets (by the fingerprint's low bits) that spill to temporary files when full, so a
validator holds at most ``BUCKETS * SPILL_AT`` pairs whatever the size of the file.
At the end each bucket is read back on its own (1/64 of the pairs) to find repeats.
Only the lines of the duplicates are kept: a file with few duplicates costs nothing.

Fingerprints come from Python's ``hash()``, which is only stable within one process
and its forked children: everything here happens within one run.
"""

from __future__ import annotations

import os
import tempfile
from array import array
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import BinaryIO

BUCKETS = 64
SPILL_AT = 1024  # array items per bucket (two per example): 8 KiB each


class DuplicateFinder:
    """Collects (fingerprint, line) pairs; :func:`resolve` finds the repeats."""

    def __init__(self, directory: str | None = None) -> None:
        self._directory = directory
        self._buckets = [array("q") for _ in range(BUCKETS)]
        self._files: list[BinaryIO | None] = [None] * BUCKETS
        self.paths: list[str | None] = [None] * BUCKETS
        self.added = 0

    def add(self, fingerprint: int, line: int) -> None:
        """Record one example."""
        bucket = self._buckets[fingerprint & (BUCKETS - 1)]
        bucket.append(fingerprint)
        bucket.append(line)
        self.added += 1
        if len(bucket) >= SPILL_AT:
            self._spill(fingerprint & (BUCKETS - 1))

    def _spill(self, index: int) -> None:
        handle = self._files[index]
        if handle is None:
            fd, path = tempfile.mkstemp(prefix=f"dedup{index:02d}-", dir=self._directory)
            handle = os.fdopen(fd, "wb")
            self._files[index] = handle
            self.paths[index] = path
        self._buckets[index].tofile(handle)
        del self._buckets[index][:]

    def export(self) -> DuplicateFinder:
        """Move everything to files (to hand the finder to another process)."""
        for index in range(BUCKETS):
            if self._buckets[index]:
                self._spill(index)
        self._close_files()
        return self

    def _close_files(self) -> None:
        for index, handle in enumerate(self._files):
            if handle is not None:
                handle.close()
                self._files[index] = None

    def bucket(self, index: int) -> array[int]:
        """All pairs of one bucket, spilled and in memory, in the order they came."""
        out = array("q")
        handle = self._files[index]
        if handle is not None:
            handle.flush()
        path = self.paths[index]
        if path is not None:
            with open(path, "rb") as spilled:
                out.frombytes(spilled.read())
        out.extend(self._buckets[index])
        return out

    def cleanup(self) -> None:
        """Remove the temporary files."""
        self._close_files()
        for index, path in enumerate(self.paths):
            if path is not None:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    pass
                self.paths[index] = None

    def __getstate__(self) -> dict[str, object]:
        self.export()
        state = dict(self.__dict__)
        state["_files"] = [None] * BUCKETS
        return state


@dataclass
class Duplicates:
    """Lines of examples whose content appeared on an earlier line."""

    count: int = 0
    lines: array[int] = field(default_factory=lambda: array("q"))

    def first(self, n: int = 3) -> list[int]:
        """The first ``n`` duplicate lines."""
        return list(self.lines[:n])


def resolve(finders: Iterable[tuple[DuplicateFinder, int]]) -> Duplicates:
    """Find repeated fingerprints across finders given with their line offsets.

    The finders must be given in file order (offsets of later parts are larger); the
    first occurrence of a content is kept and every later one is a duplicate.
    """
    parts = list(finders)
    found: list[int] = []
    for index in range(BUCKETS):
        first_line: dict[int, int] = {}
        for finder, offset in parts:
            pairs = finder.bucket(index)
            for position in range(0, len(pairs), 2):
                fingerprint = pairs[position]
                line = pairs[position + 1] + offset
                seen = first_line.get(fingerprint)
                if seen is None:
                    first_line[fingerprint] = line
                elif line < seen:  # defensive: keep the earliest line as the original
                    found.append(seen)
                    first_line[fingerprint] = line
                else:
                    found.append(line)
    found.sort()
    return Duplicates(len(found), array("q", found))
