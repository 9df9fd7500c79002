"""Streaming readers for dataset files: JSONL, JSON, CSV, TSV and XLSX.

Every reader yields ``(line, value)`` pairs one at a time, so memory does not depend on
the size of the file. Every problem (bad JSON, a byte that is not UTF-8, a missing
column, a row with too many cells) is raised as a :class:`DatasetFileError` naming the
file and the line: someone fixing a 200,000-row export needs the line, not a traceback.

Text must be UTF-8, with or without a byte-order mark (spreadsheets add one). Other
encodings are refused with a hint instead of being guessed, because a wrong guess
silently corrupts every accented letter of the training data.
"""

from __future__ import annotations

import csv
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from core.errors import DatasetError

_raw_decode = json.JSONDecoder().raw_decode


def _stdlib_loads(raw: bytes) -> Any:
    """One JSON value from one line, through the standard library's C scanner.

    Going to the scanner through ``raw_decode`` skips ``json.loads``' encoding detection
    and wrapper; anything unusual (leading spaces, trailing text, bad bytes) raises
    ValueError and goes the slow, precise way.
    """
    try:
        text = raw.decode("utf-8")
        value, end = _raw_decode(text, 0)
    except ValueError:  # bad UTF-8, or no JSON value at the start
        raise ValueError("not a plain JSON line") from None
    if end != len(text) and not text[end:].isspace():
        raise ValueError("text after the JSON value")
    return value


try:  # optional: faster still; not a dependency
    import orjson

    _fast_loads: Callable[[bytes], Any] = orjson.loads
    FAST_JSON = "orjson"
except ImportError:  # pragma: no cover - depends on the environment
    _fast_loads = _stdlib_loads
    FAST_JSON = "json (C scanner)"

BOM = b"\xef\xbb\xbf"
KINDS = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".tab": "tsv",
    ".xlsx": "xlsx",
    ".xlsm": "xlsx",
}
SUPPORTED = ".jsonl, .json, .csv, .tsv, .xlsx"
PROGRESS_EVERY = 4096
_CSV_FIELD_LIMIT = 64 * 1024 * 1024
_JSON_CHUNK = 1 << 20


class DatasetFileError(DatasetError):
    """A problem at a place in a file; ``str()`` is the one line shown to the user."""

    def __init__(self, path: str | os.PathLike[str], line: int | None, detail: str) -> None:
        self.path = str(path)
        self.line = line
        self.detail = detail
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {detail}")

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.path, self.line, self.detail))


ProgressFn = Callable[[int], None]
"""Called now and then with the number of bytes read since the previous call."""


def kind_of(path: str | os.PathLike[str]) -> str:
    """The reader for a file, from its extension; a clear error for anything else."""
    suffix = Path(path).suffix.lower()
    if suffix == ".xls":
        raise DatasetFileError(path, None, "old .xls workbooks are not supported: save as .xlsx")
    kind = KINDS.get(suffix)
    if kind is None:
        raise DatasetFileError(
            path, None, f"unsupported file type {suffix or '(no extension)'}: use {SUPPORTED}"
        )
    return kind


def _decode_error(path: Any, line: int, raw: bytes, start: int) -> DatasetFileError:
    """The error for a byte that is not UTF-8 at ``raw[start]`` (``raw`` is the line)."""
    start = max(0, min(start, len(raw) - 1))
    column = len(raw[:start].decode("utf-8", "replace")) + 1
    hint = "save the file as UTF-8 (in Excel: 'CSV UTF-8')"
    try:
        raw.decode("cp1252")
        hint = "it looks like Latin-1/Windows-1252 text; " + hint
    except UnicodeDecodeError:
        pass
    byte = raw[start] if start < len(raw) else 0
    return DatasetFileError(
        path, line, f"not UTF-8 text (byte 0x{byte:02x} at column {column}): {hint}"
    )


def _check_not_utf16(path: Any, head: bytes) -> None:
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise DatasetFileError(path, 1, "the file is UTF-16 text: save it as UTF-8")


def _json_error(path: Any, line: int, raw: bytes) -> DatasetFileError:
    """Describe why ``raw`` is not one JSON value, with the standard library's words."""
    raw = raw.rstrip(b"\r\n")
    try:
        json.loads(raw)
    except UnicodeDecodeError as exc:
        return _decode_error(path, line, raw, exc.start)
    except json.JSONDecodeError as exc:
        return DatasetFileError(path, line, f"not valid JSON: {exc.msg} (column {exc.colno})")
    except ValueError as exc:
        return DatasetFileError(path, line, f"not valid JSON: {exc}")
    return DatasetFileError(path, line, "not valid JSON")


class JsonlReader:
    """One JSON value per line, read in binary and parsed line by line.

    ``start``/``end`` restrict reading to the lines that start inside a byte range, so
    several processes can share one file; line numbers are then relative to the range
    and ``lines`` (known after iterating) lets the caller turn them into absolute ones.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        start: int = 0,
        end: int | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.path = path
        self.start = start
        self.end = end
        self.progress = progress
        self.lines = 0

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        path, progress, loads = self.path, self.progress, _fast_loads
        end = self.end if self.end is not None else float("inf")
        with open(path, "rb", buffering=1 << 20) as handle:
            pos = 0
            if self.start > 0:
                handle.seek(self.start - 1)
                pos = self.start - 1 + len(handle.readline())
            else:
                head = handle.read(4)
                _check_not_utf16(path, head)
                handle.seek(0)
            reported = pos
            n = 0
            for raw in handle:
                if pos >= end:
                    break
                pos += len(raw)
                n += 1
                if progress is not None and not n % PROGRESS_EVERY:
                    progress(pos - reported)
                    reported = pos
                if n == 1 and self.start == 0 and raw.startswith(BOM):
                    raw = raw[3:]
                if raw.isspace() or not raw:
                    continue
                try:
                    value = loads(raw)
                except ValueError:
                    try:
                        value = json.loads(raw)  # orjson is stricter (big ints, NaN)
                    except ValueError:
                        self.lines = n
                        raise _json_error(path, n, raw) from None
                yield n, value
            self.lines = n
            if progress is not None:
                progress(pos - reported)


def split_ranges(path: str | os.PathLike[str], parts: int) -> list[tuple[int, int]]:
    """Byte ranges that split a file into ``parts`` pieces (lines never split)."""
    size = os.path.getsize(path)
    bounds = [size * i // parts for i in range(parts)] + [size]
    return [(bounds[i], bounds[i + 1]) for i in range(parts) if bounds[i] < bounds[i + 1]]


class JsonReader:
    """A ``.json`` file: a top-level array of examples, or values one after another.

    The array is parsed element by element from a sliding buffer, so a huge array is
    not loaded whole. Line numbers are those where each element starts.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        progress: ProgressFn | None = None,
        chunk_size: int = _JSON_CHUNK,
    ) -> None:
        self.path = path
        self.progress = progress
        self.chunk_size = chunk_size

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        import codecs

        path = self.path
        decoder = json.JSONDecoder()
        text_decoder = codecs.getincrementaldecoder("utf-8-sig")()
        ws = re.compile(r"[ \t\n\r]*")
        with open(path, "rb") as handle:
            _check_not_utf16(path, handle.read(4))
            handle.seek(0)
            buf = ""
            pos = 0
            line = 1  # line of buf[pos]
            eof = False
            chunk = self.chunk_size

            def more() -> bool:
                nonlocal buf, pos, eof
                if eof:
                    return False
                data = handle.read(chunk)
                if self.progress is not None:
                    self.progress(len(data))
                try:
                    text = text_decoder.decode(data, final=not data)
                except UnicodeDecodeError as exc:
                    at = max(0, exc.start - (len(exc.object) - len(data)))
                    bad_line = line + buf.count("\n", pos) + data[:at].count(b"\n")
                    line_start = data.rfind(b"\n", 0, at) + 1
                    line_end = data.find(b"\n", at)
                    raw_line = data[line_start : line_end if line_end >= 0 else len(data)]
                    raise _decode_error(path, bad_line, raw_line, at - line_start) from None
                if not data:
                    eof = True
                buf = buf[pos:] + text
                pos = 0
                return True

            def skip_ws() -> None:
                nonlocal pos, line
                while True:
                    match = ws.match(buf, pos)
                    assert match is not None
                    line += buf.count("\n", pos, match.end())
                    pos = match.end()
                    if pos < len(buf) or not more():
                        return

            skip_ws()
            if pos >= len(buf):
                return
            in_array = buf[pos] == "["
            if in_array:
                pos += 1
                skip_ws()
                if pos < len(buf) and buf[pos] == "]":
                    return
            while True:
                skip_ws()
                if pos >= len(buf):
                    if in_array:
                        raise DatasetFileError(
                            path, line, "not valid JSON: the array is not closed"
                        )
                    return
                while True:
                    try:
                        value, end = decoder.raw_decode(buf, pos)
                        break
                    except json.JSONDecodeError as exc:
                        truncated = exc.pos >= len(buf) - 1 or exc.msg.startswith("Unterminated")
                        if truncated and not eof:
                            chunk = min(chunk * 2, 64 * self.chunk_size)
                            more()
                            continue
                        bad = line + buf.count("\n", pos, exc.pos)
                        column = exc.pos - buf.rfind("\n", 0, exc.pos)
                        raise DatasetFileError(
                            path, bad, f"not valid JSON: {exc.msg} (column {column})"
                        ) from None
                chunk = self.chunk_size
                yield line, value
                line += buf.count("\n", pos, end)
                pos = end
                skip_ws()
                if not in_array:
                    continue
                if pos >= len(buf):
                    raise DatasetFileError(path, line, "not valid JSON: the array is not closed")
                if buf[pos] == ",":
                    pos += 1
                    continue
                if buf[pos] == "]":
                    pos += 1
                    skip_ws()
                    if pos < len(buf):
                        raise DatasetFileError(path, line, "not valid JSON: text after the array")
                    return
                raise DatasetFileError(
                    path, line, "not valid JSON: expected ',' or ']' between array elements"
                )


def _decoded_lines(path: Any, progress: ProgressFn | None) -> Iterator[str]:
    """Lines of a text file, decoded as UTF-8 one by one (BOM dropped)."""
    with open(path, "rb", buffering=1 << 20) as handle:
        _check_not_utf16(path, handle.read(4))
        handle.seek(0)
        pending = 0
        for n, raw in enumerate(handle, 1):
            if n == 1 and raw.startswith(BOM):
                raw = raw[3:]
            if progress is not None:
                pending += len(raw)
                if not n % PROGRESS_EVERY:
                    progress(pending)
                    pending = 0
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise _decode_error(path, n, raw, exc.start) from None
        if progress is not None:
            progress(pending)


def sniff_delimiter(header: str) -> str:
    """The most frequent of , ; tab | in the header line (comma when none)."""
    counts = {d: header.count(d) for d in (",", ";", "\t", "|")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def normalize_delimiter(delimiter: str) -> tuple[str, bool]:
    """A one-character delimiter, and whether it was given padded (``" ; "``)."""
    if delimiter.lower() in ("tab", "\\t"):
        return "\t", False
    stripped = delimiter.strip(" ")
    if len(stripped) != 1:
        raise DatasetError(
            f"the CSV delimiter must be one character (like , or ; or tab), got {delimiter!r}"
        )
    return stripped, stripped != delimiter


def _cell_text(value: Any) -> str:
    """What a spreadsheet cell shows, as text (integral floats without '.0')."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    return str(value)


class Table:
    """Rows of a CSV, TSV or XLSX file: ``columns`` from the first row, then the cells.

    Rows come as ``(line, cells)`` with the cells as text, padded to the header's width
    (spreadsheets drop trailing empty cells); a row wider than the header is an error
    because a cell would otherwise be silently lost. Empty rows are skipped.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        delimiter: str | None = None,
        progress: ProgressFn | None = None,
        strip_cells: bool = False,
    ) -> None:
        self.path = path
        self.kind = kind_of(path)
        if self.kind not in ("csv", "tsv", "xlsx"):
            raise DatasetFileError(path, None, "expected a table (.csv, .tsv or .xlsx)")
        self.progress = progress
        self.strip_cells = strip_cells
        self.notes: list[str] = []
        self.delimiter: str | None = None
        self._padded = False
        if delimiter:
            self.delimiter, self._padded = normalize_delimiter(delimiter)
        elif self.kind == "tsv":
            self.delimiter = "\t"
        self._rows = self._xlsx_rows() if self.kind == "xlsx" else self._csv_rows()
        self.columns: list[str] = []
        self.header_line = 0
        for line, cells in self._rows:
            self.header_line = line
            self.columns = [cell.strip() for cell in cells]
            break
        while self.columns and not self.columns[-1]:
            self.columns.pop()
        if not self.columns:
            raise DatasetFileError(path, None, "the file is empty: expected a header row")

    def _csv_rows(self) -> Iterator[tuple[int, list[str]]]:
        csv.field_size_limit(_CSV_FIELD_LIMIT)
        lines = _decoded_lines(self.path, self.progress)
        first = next(lines, None)
        if first is None:
            return
        if self.delimiter is None:
            self.delimiter = sniff_delimiter(first)

        def source() -> Iterator[str]:
            yield first
            yield from lines

        reader = csv.reader(source(), delimiter=self.delimiter, strict=True)
        previous = 0
        strip = self._padded or self.strip_cells
        while True:
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise DatasetFileError(self.path, previous + 1, f"bad CSV: {exc}") from None
            line = previous + 1
            previous = reader.line_num
            if not any(cells):
                continue
            yield line, [cell.strip() for cell in cells] if strip else cells

    def _xlsx_rows(self) -> Iterator[tuple[int, list[str]]]:
        import zipfile

        from openpyxl import load_workbook
        from openpyxl.utils.exceptions import InvalidFileException

        try:
            workbook = load_workbook(self.path, read_only=True, data_only=True)
        except (InvalidFileException, zipfile.BadZipFile, KeyError, OSError) as exc:
            raise DatasetFileError(self.path, None, f"not a valid .xlsx workbook ({exc})") from None
        try:
            if len(workbook.worksheets) > 1:
                self.notes.append(
                    f"the workbook has {len(workbook.worksheets)} sheets: reading only the first, "
                    f"{workbook.worksheets[0].title!r}"
                )
            sheet = workbook.worksheets[0]
            strip = self.strip_cells
            for line, values in enumerate(sheet.iter_rows(min_row=1, values_only=True), 1):
                cells = [_cell_text(value) for value in values]
                if not any(cells):
                    continue
                yield line, [cell.strip() for cell in cells] if strip else cells
        finally:
            workbook.close()

    def __iter__(self) -> Iterator[tuple[int, list[str]]]:
        width = len(self.columns)
        for line, cells in self._rows:
            if len(cells) > width:
                if any(cells[width:]):
                    raise DatasetFileError(
                        self.path,
                        line,
                        f"{len(cells)} cells but the header has {width} columns "
                        "(a value containing the delimiter must be quoted)",
                    )
                cells = cells[:width]
            elif len(cells) < width:
                cells = cells + [""] * (width - len(cells))
            yield line, cells


def find_column(table: Table, name: str, option: str) -> int:
    """Index of a column by name (case and spaces ignored); an error naming the option."""
    wanted = name.strip().lower()
    for index, column in enumerate(table.columns):
        if column.lower() == wanted:
            return index
    raise DatasetFileError(
        table.path,
        table.header_line,
        f"no {name!r} column (columns: {', '.join(table.columns)}); name it with {option}",
    )


class Records:
    """Examples of any supported file as ``(line, object)`` pairs.

    JSONL and JSON give their parsed values. Tables give one dict per row keyed by the
    lower-cased column names; a ``messages`` column holds the JSON of the messages list.
    ``columns`` is None for JSON files.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        delimiter: str | None = None,
        progress: ProgressFn | None = None,
    ) -> None:
        self.path = path
        self.kind = kind_of(path)
        if not os.path.isfile(path):
            raise DatasetFileError(path, None, "no such file")
        self.progress = progress
        self.notes: list[str] = []
        self.columns: list[str] | None = None
        self._table: Table | None = None
        if self.kind in ("csv", "tsv", "xlsx"):
            self._table = Table(path, delimiter, progress)
            self.notes.extend(self._table.notes)
            self.columns = [column.lower() for column in self._table.columns]
            duplicated = {c for c in self.columns if self.columns.count(c) > 1}
            if duplicated:
                raise DatasetFileError(
                    path,
                    self._table.header_line,
                    f"duplicated column names: {', '.join(sorted(duplicated))}",
                )
            if "messages" not in self.columns and not (
                "prompt" in self.columns and "completion" in self.columns
            ):
                present = [c for c in ("prompt", "completion") if c in self.columns]
                missing = "a completion column" if present == ["prompt"] else None
                if present == ["completion"]:
                    missing = "a prompt column"
                raise DatasetFileError(
                    path,
                    self._table.header_line,
                    f"{missing or 'prompt and completion columns (or a messages column)'} "
                    f"missing; columns are: {', '.join(self._table.columns)}",
                )

    def __iter__(self) -> Iterator[tuple[int, Any]]:
        if self.kind == "jsonl":
            return iter(JsonlReader(self.path, progress=self.progress))
        if self.kind == "json":
            return iter(JsonReader(self.path, progress=self.progress))
        return self._table_records()

    def _table_records(self) -> Iterator[tuple[int, Any]]:
        assert self._table is not None and self.columns is not None
        columns = self.columns
        messages_at = columns.index("messages") if "messages" in columns else -1
        for line, cells in self._table:
            record: dict[str, Any] = dict(zip(columns, cells, strict=True))
            if messages_at >= 0:
                cell = cells[messages_at]
                try:
                    record["messages"] = json.loads(cell) if cell.strip() else None
                except ValueError as exc:
                    raise DatasetFileError(
                        self.path, line, f"the messages cell is not valid JSON: {exc}"
                    ) from None
            yield line, record


def peek(path: str | os.PathLike[str], delimiter: str | None = None) -> tuple[int, Any] | None:
    """The first example of a file (to detect its format), or None when it has none."""
    for item in Records(path, delimiter):
        return item
    return None
