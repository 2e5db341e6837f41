"""The checkpoint of an import: how far the service has confirmed the file written.

Saved after each batch the service answered, atomically (a temporary file
in the same folder, flushed to disk, then renamed over the old one), so a
crash at any moment leaves either the previous checkpoint or the new one,
never half of one. A resumed import starts at its offset; the batch that was
in flight when the import died is sent again, and its events, keyed, come
back as duplicates: counted once.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from api.importing.rows import ImportFileError, Position

VERSION = 1


class Tally(msgspec.Struct, rename="camel"):
    """What became of the rows read: as the service answered them, or refused here."""

    rows: int = 0
    accepted: int = 0
    duplicates: int = 0
    conflicts: int = 0
    rejected: int = 0  # errors: the service's, or a row that could not be sent
    late: dict[str, int] = msgspec.field(default_factory=dict)  # accepted late, by kind
    history: int = 0  # accepted as imported history (``--history``, late: "history")

    def add(self, other: Tally) -> None:
        self.rows += other.rows
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.conflicts += other.conflicts
        self.rejected += other.rejected
        self.history += other.history
        for kind, count in other.late.items():
            self.late[kind] = self.late.get(kind, 0) + count


class Checkpoint(msgspec.Struct, rename="camel"):
    version: int
    source: str  # the file's absolute path
    format: str
    offset: int  # the byte just past the last row confirmed
    rows: int  # rows up to there
    lines: int  # lines up to there
    errors_size: int  # the errors file's size then (a resumed import cuts it back to it)
    tally: Tally
    history: bool = False  # sent with --history: a resumed run must be too

    @property
    def position(self) -> Position:
        return Position(self.offset, self.rows, self.lines)


@dataclass
class CheckpointFile:
    path: Path
    _tmp: Path = field(init=False)

    def __post_init__(self) -> None:
        self._tmp = self.path.with_name(self.path.name + ".tmp")

    def load(self, source: Path, fmt: str, history: bool = False) -> Checkpoint | None:
        """The saved checkpoint of this file, None if there is none.

        Raises ``ImportFileError`` for a checkpoint that is not this file's,
        that the file no longer matches (it was truncated), or of an import
        started in the other mode (with or without ``--history``): resumed so,
        the file's old rows would be imported as history in one part and
        refused by the horizon in the other.
        """
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            saved = msgspec.json.decode(data, type=Checkpoint)
        except msgspec.DecodeError as error:
            raise ImportFileError(
                f"{self.path} is not a checkpoint ({error}): remove it, or --restart"
            ) from None
        if saved.version != VERSION or saved.source != str(source) or saved.format != fmt:
            raise ImportFileError(
                f"{self.path} is the checkpoint of another import ({saved.source},"
                f" {saved.format}): give another --checkpoint, or --restart"
            )
        if saved.history != history:
            started = "with" if saved.history else "without"
            raise ImportFileError(
                f"{self.path} is the checkpoint of an import started {started} --history:"
                f" resume it {started} --history, or --restart"
            )
        if source.stat().st_size < saved.offset:
            raise ImportFileError(
                f"{source} is shorter than its checkpoint says it was ({saved.offset:,} bytes"
                " imported): the file changed; --restart to import it from the start"
            )
        return saved

    def save(self, checkpoint: Checkpoint) -> None:
        with open(self._tmp, "wb") as out:
            out.write(msgspec.json.encode(checkpoint))
            out.flush()
            os.fsync(out.fileno())
        os.replace(self._tmp, self.path)

    def remove(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
