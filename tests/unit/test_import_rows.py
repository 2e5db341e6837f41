"""Reading import files: rows as ingest events, their places, and resuming from any of them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from api.importing.checkpoint import VERSION, Checkpoint, CheckpointFile, Tally
from api.importing.rows import ImportFileError, Position, Row, format_of, rows
from api.importing.runner import ErrorsFile, Importer

CSV = (
    "\ufeffcustomerRef,metric,quantity,ts,idempotencyKey,meta\r\n"
    "cus_1,api_calls,1.50,2026-11-30T10:00:00Z,k-1,\r\n"
    "\r\n"
    'cus_2,api_calls,2,2026-11-30T10:00:01Z,,"{""a"": 1,\r\n""b"": 2}"\r\n'
    "cus_3,api_calls,x,2026-11-30T10:00:02Z,,\r\n"
).encode()


def read(data: bytes, fmt: str, start: Position | None = None) -> list[Row]:
    return list(rows(io.BytesIO(data), fmt, start or Position()))


def places(found: list[Row]) -> list[tuple[object, ...]]:
    return [(r.number, r.line, r.end, r.event, r.source, str(r.problem)) for r in found]


def test_csv_rows_become_ingest_events_with_their_places() -> None:
    found = read(CSV, "csv")
    assert [(r.number, r.line) for r in found] == [(1, 2), (2, 4), (3, 6)]
    assert json.loads(found[0].event or b"") == {
        "customerRef": "cus_1",
        "metric": "api_calls",
        "quantity": "1.50",  # as written: the service reads it
        "ts": "2026-11-30T10:00:00Z",
        "idempotencyKey": "k-1",
    }
    second = json.loads(found[1].event or b"")
    assert "idempotencyKey" not in second and second["meta"] == {"a": 1, "b": 2}
    assert found[-1].end == len(CSV)
    assert json.loads(found[2].event or b"")["quantity"] == "x"  # refused by the service


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_resuming_after_any_row_reads_the_rows_after_it(fmt: str) -> None:
    data = CSV
    if fmt == "jsonl":
        data = b'{"a": 1}\n\n{"b": 2}\nnot json\n{"c": 3}\n'
    whole = read(data, fmt)
    for done, row in enumerate(whole, start=1):
        rest = read(data, fmt, row.after)
        assert places(rest) == places(whole[done:])


def test_what_cannot_be_sent_is_refused_with_its_field() -> None:
    header = b"customerRef,metric,quantity,ts,meta\n"
    bad = read(header + b"c,m,1,t,{oops\nc,m,1\nc,m,1,t,,extra\nc,m,1,t\xff,\n", "csv")
    assert [(r.event, r.problem and r.problem.field) for r in bad] == [
        (None, "meta"),
        (None, "row"),
        (None, "row"),
        (None, "row"),
    ]
    assert bad[1].problem is not None and "has 3 cells where the header has 5" in str(
        bad[1].problem
    )
    assert bad[3].problem is not None and bad[3].problem.reason == "is not UTF-8"
    lines = read(b'{"a": 1}\n{"a": \n', "jsonl")
    assert lines[1].problem is not None and lines[1].problem.field == "line"
    assert lines[1].problem.reason.startswith("is not JSON")


@pytest.mark.parametrize(
    ("header", "says"),
    [
        (b"", "empty"),
        (b"customerRef,metric,quantity,ts,tenant\n", "unknown column 'tenant'"),
        (b"customerRef,metric,quantity\n", "no 'ts' column"),
        (b"customerRef,metric,quantity,ts,ts\n", "twice"),
    ],
)
def test_a_csv_header_that_cannot_be_read_refuses_the_file(header: bytes, says: str) -> None:
    with pytest.raises(ImportFileError, match=says):
        read(header, "csv")


def test_the_format_comes_from_the_name_or_the_option() -> None:
    assert format_of("h.CSV", None) == "csv" and format_of("h.ndjson", None) == "jsonl"
    assert format_of("h.txt", "jsonl") == "jsonl"
    with pytest.raises(ImportFileError, match="--format"):
        format_of("stdin", None)


def test_a_checkpoint_belongs_to_one_file_and_is_replaced_whole(tmp_path: Path) -> None:
    source = tmp_path / "h.csv"
    source.write_bytes(CSV)
    file = CheckpointFile(tmp_path / "h.csv.checkpoint")
    assert file.load(source, "csv") is None
    saved = Checkpoint(VERSION, str(source), "csv", 60, 1, 2, 0, Tally(rows=1, accepted=1))
    file.save(saved)
    assert file.load(source, "csv") == saved
    assert not (tmp_path / "h.csv.checkpoint.tmp").exists()
    with pytest.raises(ImportFileError, match="another import"):
        file.load(tmp_path / "other.csv", "csv")
    source.write_bytes(CSV[:50])
    with pytest.raises(ImportFileError, match="shorter than its checkpoint"):
        file.load(source, "csv")
    (tmp_path / "h.csv.checkpoint").write_text("{")
    with pytest.raises(ImportFileError, match="not a checkpoint"):
        file.load(source, "csv")


def test_a_batch_of_rows_none_of_which_can_be_sent_sends_nothing(tmp_path: Path) -> None:
    class Refusing:
        def send(self, events: list[bytes]) -> list[dict[str, object]]:
            raise AssertionError(f"sent {events}")

        def close(self) -> None:
            pass

    errors = ErrorsFile(tmp_path / "errors.jsonl", None)
    importer = Importer(Refusing(), errors, batch_size=2)
    run = importer.run(iter(read(b"not json\n{oops\n[1\n", "jsonl")), Position())
    errors.close()
    assert (run.tally.rows, run.tally.rejected, run.complete) == (3, 3, True)
    assert [
        json.loads(line)["row"] for line in (tmp_path / "errors.jsonl").read_text().splitlines()
    ] == [1, 2, 3]


def test_an_import_resumes_only_as_it_started_with_or_without_history(tmp_path: Path) -> None:
    # Resumed the other way, the rest of the file would go in another mode than its
    # start: old rows imported as history in one part and refused in the other.
    source = tmp_path / "h.csv"
    source.write_bytes(CSV)
    file = CheckpointFile(tmp_path / "h.csv.checkpoint")
    started = Checkpoint(VERSION, str(source), "csv", 60, 1, 2, 0, Tally(rows=1), history=True)
    file.save(started)
    assert file.load(source, "csv", history=True) == started
    with pytest.raises(ImportFileError, match="started with --history"):
        file.load(source, "csv")
    file.save(Checkpoint(VERSION, str(source), "csv", 60, 1, 2, 0, Tally(rows=1)))
    with pytest.raises(ImportFileError, match="started without --history"):
        file.load(source, "csv", history=True)
