"""A brand-new, empty database for each benchmark run, dropped afterwards."""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from benchmarks.report import log

PG_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres"


@contextmanager
def fresh_database(backend: str, prefix: str = "smbench") -> Iterator[dict[str, str]]:
    """Environment variables for the service pointing at a brand-new, empty database."""
    if backend == "postgres":
        import psycopg

        name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        log(f"created PostgreSQL database {name}")
        try:
            yield {"STRIPEMETER_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"}
        finally:
            with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            log(f"dropped PostgreSQL database {name}")
    elif backend == "sqlite":
        directory = tempfile.mkdtemp(prefix="smbench_sqlite_")
        log(f"SQLite data directory {directory}")
        try:
            yield {"STRIPEMETER_DATA_DIR": directory}
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    else:
        raise SystemExit(f"unknown backend {backend!r} (postgres or sqlite)")
