"""The API side of ingest alone: decoding and validating single-event bodies, no I/O.

    .venv/bin/python -m benchmarks.ingest_validation [--bodies 1000] [--rounds 15]

What ``read_batch`` (the ingest route's decode and checks, before the writer)
costs per single-event request: the shape checks (nesting, repeated keys),
the field rules and the key choice. Prints the median and the best round,
in microseconds per body.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from uuid import uuid4

from api.routes.ingest import read_batch
from domain.tenancy import Principal, Scope


def bodies(count: int) -> list[bytes]:
    return [
        json.dumps(
            {
                "events": [
                    {
                        "metric": "api_calls",
                        "customerRef": f"cus_{n % 100}",
                        "quantity": n % 7 + 1,
                        "ts": "2026-03-15T11:00:00.123Z",
                        "idempotencyKey": f"req-{n}",
                        "meta": {"endpoint": "/v1/search", "region": "eu"},
                    }
                ]
            }
        ).encode()
        for n in range(count)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bodies", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args(argv)
    principal = Principal(
        tenant_id=uuid4(), tenant_slug="acme", key_id=uuid4(), scopes=frozenset({Scope.INGEST})
    )
    data = bodies(args.bodies)
    per_body = []
    for _ in range(args.rounds):
        start = time.perf_counter()
        for body in data:
            results, submissions = read_batch(body, principal, None, 1000)
            assert len(submissions) == 1, results
        per_body.append((time.perf_counter() - start) / len(data) * 1e6)
    print(
        json.dumps(
            {
                "bodies": args.bodies,
                "rounds": args.rounds,
                "median_us_per_body": round(statistics.median(per_body), 2),
                "best_us_per_body": round(min(per_body), 2),
            }
        )
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
