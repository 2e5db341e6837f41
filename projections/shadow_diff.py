"""How a rebuilt (shadow) table differs from the live one, counted and sampled by the database.

Inside one ``ViewStore.beside`` transaction both copies are visible, the
shadow's as ``sm_rebuild.<table>``: rows only one side has and rows that
differ are found by primary key with SQL, so memory stays flat whatever the
size of the views. A few rows of each kind are kept as samples for the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from projections.store import SHADOW, Tx, ViewStore

# Columns that record when a row was written, not what the log says: two
# rebuilds of the same log differ there, so the comparison leaves them out.
WRITE_TIME_COLUMNS = frozenset({"updated_at"})
SAMPLES_PER_KIND = 5


@dataclass
class TableDiff:
    table: str
    live_rows: int
    shadow_rows: int
    only_live: int = 0
    only_shadow: int = 0
    differing: int = 0
    ignored_columns: list[str] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def differences(self) -> int:
        return self.only_live + self.only_shadow + self.differing


def diff_table(store: ViewStore, tx: Tx, table: str) -> TableDiff:
    """Count and sample the rows only one side has and the rows that differ, by primary key.

    The database joins the two copies itself, so nothing here holds a table.
    Both copies must have the same columns (the rebuild checks that first).
    """
    columns = store.shadow_columns(tx, table)
    ignored = [c.name for c in columns if c.name in WRITE_TIME_COLUMNS]
    key = [c.name for c in columns if c.in_primary_key]
    values = [c.name for c in columns if not c.in_primary_key and c.name not in ignored]
    live, rebuilt = f"{table} l", f"{SHADOW}.{table} s"
    (live_rows,), (shadow_rows,) = (
        tx.execute(f"SELECT count(*) FROM {table}")[0],
        tx.execute(f"SELECT count(*) FROM {SHADOW}.{table}")[0],
    )
    diff = TableDiff(table, int(live_rows), int(shadow_rows), ignored_columns=ignored)
    if not key:
        # No primary key: rows are compared whole (as sets); none can "differ".
        names = ", ".join(values)
        only_live = f"SELECT {names} FROM {table} EXCEPT SELECT {names} FROM {SHADOW}.{table}"
        only_shadow = f"SELECT {names} FROM {SHADOW}.{table} EXCEPT SELECT {names} FROM {table}"
        diff.only_live = _count_and_sample(tx, only_live, "onlyLive", values, diff.samples)
        diff.only_shadow = _count_and_sample(tx, only_shadow, "onlyShadow", values, diff.samples)
        return diff

    joined = " AND ".join(f"s.{k} = l.{k}" for k in key)
    diff.only_live = _count_and_sample(
        tx,
        f"SELECT {_each('l', key)} FROM {live} WHERE NOT EXISTS"
        f" (SELECT 1 FROM {rebuilt} WHERE {joined}) ORDER BY {_each('l', key)}",
        "onlyLive",
        key,
        diff.samples,
    )
    diff.only_shadow = _count_and_sample(
        tx,
        f"SELECT {_each('s', key)} FROM {rebuilt} WHERE NOT EXISTS"
        f" (SELECT 1 FROM {live} WHERE {joined}) ORDER BY {_each('s', key)}",
        "onlyShadow",
        key,
        diff.samples,
    )
    if values:
        differs = " OR ".join(f"l.{c} {store.is_distinct} s.{c}" for c in values)
        pairs = f"FROM {live} JOIN {rebuilt} ON {joined} WHERE {differs}"
        diff.differing = int(tx.execute(f"SELECT count(*) {pairs}")[0][0])
        if diff.differing:
            both = ", ".join(f"l.{c}, s.{c}" for c in values)
            for row in tx.execute(
                f"SELECT {_each('l', key)}, {both} {pairs} ORDER BY {_each('l', key)}"
                f" LIMIT {SAMPLES_PER_KIND}"
            ):
                diff.samples.append(_differing(key, values, row))
    return diff


def _each(alias: str, columns: Sequence[str]) -> str:
    return ", ".join(f"{alias}.{c}" for c in columns)


def _count_and_sample(
    tx: Tx, query: str, kind: str, columns: Sequence[str], samples: list[dict[str, Any]]
) -> int:
    """How many rows ``query`` finds; the first few of them go into ``samples``."""
    count = int(tx.execute(f"SELECT count(*) FROM ({query}) found")[0][0])
    if count:
        for row in tx.execute(f"{query} LIMIT {SAMPLES_PER_KIND}"):
            samples.append({"kind": kind, "row": dict(zip(columns, row, strict=True))})
    return count


def _differing(key: Sequence[str], values: Sequence[str], row: Sequence[Any]) -> dict[str, Any]:
    pairs = iter(row[len(key) :])
    sides = {name: (next(pairs), next(pairs)) for name in values}
    changed = {name: pair for name, pair in sides.items() if pair[0] != pair[1]}
    return {
        "kind": "differs",
        "key": dict(zip(key, row, strict=False)),
        "live": {name: pair[0] for name, pair in changed.items()},
        "shadow": {name: pair[1] for name, pair in changed.items()},
    }
