"""Reading an import file: CSV or JSONL rows, each as the ingest event it asks for.

A row becomes the JSON object ``POST /v1/events/ingest`` takes as one event,
and nothing is judged here that the service judges: a quantity of ``abc`` or
a ``ts`` without a time zone is sent as it is, and the service's answer says
what is wrong with it. Only what cannot be sent at all is refused here (a
JSONL line that is not JSON, a CSV cell ``meta`` that is not JSON, a CSV row
with more or fewer cells than the header).

Each row knows the byte offset just past it, so that an import can resume
from a checkpoint by seeking there.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import msgspec

from domain.errors import InvalidInputError

FORMATS = ("csv", "jsonl")
# The CSV header names the fields of an ingest event (tenant-independent: the key says whose).
CSV_COLUMNS = ("customerRef", "metric", "quantity", "ts", "idempotencyKey", "meta")
CSV_REQUIRED = ("customerRef", "metric", "quantity", "ts")


class ImportFileError(Exception):
    """The file cannot be imported at all (an unknown format, a header without a column)."""


@dataclass(frozen=True)
class Position:
    """Where reading starts: byte ``offset``, after ``rows`` rows and ``lines`` lines."""

    offset: int = 0
    rows: int = 0
    lines: int = 0


@dataclass(frozen=True)
class Row:
    """One row: where it is, what it asks for (None: refused here, see ``problem``)."""

    number: int  # the row's place among the rows, from 1 (a CSV header is not a row)
    line: int  # the file's line where it starts, from 1
    end: int  # the byte offset just past it
    event: bytes | None  # the ingest event, JSON
    source: Any  # the row as read: the CSV cells by column, or the JSONL line
    problem: InvalidInputError | None = None
    last_line: int = 0  # where it ends (a quoted CSV cell may hold line breaks); 0: ``line``

    @property
    def after(self) -> Position:
        """Where the next row's reading starts."""
        return Position(self.end, self.number, self.last_line or self.line)


def format_of(name: str, given: str | None) -> str:
    """``--format`` if given, else the file's extension."""
    if given is not None:
        return given
    for fmt in FORMATS:
        if name.lower().endswith(f".{fmt}") or (fmt == "jsonl" and name.endswith(".ndjson")):
            return fmt
    raise ImportFileError(f"cannot tell the format of {name!r}: name it with --format csv|jsonl")


def rows(stream: BinaryIO, fmt: str, start: Position = Position()) -> Iterator[Row]:
    """The rows of ``stream`` (positioned at byte 0) from ``start`` on (a resumed import).

    For CSV the header is read first, whatever ``start``; ``start`` must then be
    0 or past it. Resuming seeks, so ``stream`` must be seekable then.
    """
    if fmt == "csv":
        return _csv_rows(stream, start)
    return _jsonl_rows(stream, start)


class _Lines:
    """A binary stream's lines, decoded, counting the bytes and lines read."""

    def __init__(self, stream: BinaryIO, offset: int, line: int) -> None:
        self.stream = stream
        self.offset = offset
        self.line = line  # lines read so far

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        raw = self.stream.readline()
        if not raw:
            raise StopIteration
        self.offset += len(raw)
        self.line += 1
        # Undecodable bytes are kept apart (surrogates) and refused with their row.
        return raw.decode("utf-8", "surrogateescape")


def _csv_rows(stream: BinaryIO, start: Position) -> Iterator[Row]:
    lines = _Lines(stream, 0, 0)
    header = next(csv.reader(lines), None)
    if header is None:
        raise ImportFileError("the CSV file is empty: it needs a header row")
    columns = [name.strip().lstrip("\ufeff") for name in header]
    _check_header(columns)
    if start.offset:
        if start.offset < lines.offset:
            raise ImportFileError("the checkpoint's offset is inside the CSV header")
        stream.seek(start.offset)
        lines.offset, lines.line = start.offset, start.lines
    number = start.rows + 1
    reader = csv.reader(lines)
    while True:
        line = lines.line + 1
        try:
            cells = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            problem = InvalidInputError("row", f"is not valid CSV: {error}")
            yield Row(number, line, lines.offset, None, None, problem, lines.line)
            number += 1
            continue
        if not cells:  # a blank line
            continue
        row = _csv_row(number, line, lines.offset, columns, cells)
        yield replace(row, last_line=lines.line) if lines.line != line else row
        number += 1


def _check_header(columns: list[str]) -> None:
    unknown = [c for c in columns if c not in CSV_COLUMNS]
    if unknown:
        raise ImportFileError(
            f"unknown column {unknown[0]!r} in the CSV header: the columns are"
            f" {', '.join(CSV_COLUMNS)} (the first four required)"
        )
    missing = [c for c in CSV_REQUIRED if c not in columns]
    if missing:
        raise ImportFileError(f"the CSV header has no {missing[0]!r} column")
    if len(set(columns)) != len(columns):
        raise ImportFileError("the CSV header names a column twice")


def _csv_row(number: int, line: int, end: int, columns: list[str], cells: list[str]) -> Row:
    source = dict(zip(columns, cells, strict=False))
    if len(cells) != len(columns):
        problem = InvalidInputError(
            "row", f"has {len(cells)} cells where the header has {len(columns)}"
        )
        return Row(number, line, end, None, cells, problem)
    event: dict[str, Any] = {}
    for name, cell in source.items():
        if name == "meta":
            if cell.strip():
                try:
                    event["meta"] = msgspec.json.decode(cell)
                except msgspec.DecodeError as error:
                    problem = InvalidInputError("meta", f"is not JSON: {error}")
                    return Row(number, line, end, None, source, problem)
        elif name == "idempotencyKey":
            if cell != "":  # an empty cell: no key (the service derives one from the content)
                event[name] = cell
        else:
            event[name] = cell  # the quantity too, as text: the service reads decimals exactly
    try:
        encoded = msgspec.json.encode(event)
    except UnicodeEncodeError:
        problem = InvalidInputError("row", "is not UTF-8")
        return Row(number, line, end, None, _printable(source), problem)
    return Row(number, line, end, encoded, source)


def _jsonl_rows(stream: BinaryIO, start: Position) -> Iterator[Row]:
    if start.offset:
        stream.seek(start.offset)
    offset, line, number = start.offset, start.lines, start.rows + 1
    while raw := stream.readline():
        offset += len(raw)
        line += 1
        text = raw.strip()
        if not text:
            continue
        try:
            msgspec.json.decode(text)
        except (msgspec.DecodeError, UnicodeDecodeError) as error:
            shown = text.decode("utf-8", "replace")
            reason = "is not UTF-8" if isinstance(error, UnicodeDecodeError) else "is not JSON"
            detail = "" if isinstance(error, UnicodeDecodeError) else f": {error}"
            problem = InvalidInputError("line", f"{reason}{detail}")
            yield Row(number, line, offset, None, shown, problem)
        else:
            yield Row(number, line, offset, text, text.decode("utf-8", "replace"))
        number += 1


def _printable(source: dict[str, str]) -> dict[str, str]:
    return {
        k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        for k, v in source.items()
    }
