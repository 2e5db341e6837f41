"""The key the Node SDK computes is the key the server derives from what the SDK sends.

Hypothesis makes events (quantities, times with offsets and fractions, meta
with any text, floats and nesting); Node prepares each one as it would before
its first attempt (``prepareEvent``: time fixed, key computed) and hands back
the wire form it would send; the server reads that wire form through its own
ingest path. The shared vectors fix known cases; this looks for the unknown.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from api.routes.ingest import read_batch
from domain.tenancy import Principal, Scope
from tests.sdk import strategies

PRINCIPAL = Principal(
    tenant_id=uuid4(), tenant_slug="acme", key_id=uuid4(), scopes=frozenset({Scope.INGEST})
)

# Reads a JSON array of events on stdin; writes, per event, the key and wire form, or the refusal.
PREPARE = """
const sdk = require(process.argv[1]);
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const out = JSON.parse(input).map((event) => {
    try {
      const prepared = sdk.prepareEvent(event, () => new Date(0));
      return { key: prepared.idempotencyKey, wire: JSON.stringify(prepared.wire) };
    } catch (error) {
      return { refused: error.field ?? String(error) };
    }
  });
  process.stdout.write(JSON.stringify(out));
});
"""

names = strategies.names
metas = strategies.metas(2**53 - 1)  # integers JavaScript holds exactly
quantities = strategies.quantities()


@st.composite
def timestamps(draw: st.DrawFn) -> str:
    moment = draw(st.datetimes(datetime(1990, 1, 1), datetime(2090, 1, 1)))
    offset = draw(st.integers(-23 * 60 - 59, 23 * 60 + 59))
    local = moment.replace(tzinfo=timezone(timedelta(minutes=offset)))
    stamp = local.strftime("%Y-%m-%d") + draw(st.sampled_from("Tt ")) + local.strftime("%H:%M:%S")
    places = draw(st.integers(0, 9))
    if places:
        stamp += "." + draw(st.text("0123456789", min_size=places, max_size=places))
    if offset == 0 and draw(st.booleans()):
        return stamp + draw(st.sampled_from("Zz"))
    sign = "+" if offset >= 0 else "-"
    return stamp + f"{sign}{abs(offset) // 60:02d}:{abs(offset) % 60:02d}"


events = st.fixed_dictionaries(
    {"metric": names, "customerRef": names, "quantity": quantities, "ts": timestamps()},
    optional={"meta": metas},
)


def _prepare(build: Path, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    node = shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, "-e", PREPARE, str(build)],
        input=json.dumps(batch),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    prepared: list[dict[str, Any]] = json.loads(done.stdout)
    return prepared


# A failing batch is large; its repr must not turn into the failure itself.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisWarning")
def test_nodes_key_is_the_servers_key_for_what_node_sends(node_sdk_build: Path) -> None:
    @settings(
        max_examples=8,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],
        derandomize=True,
    )
    @given(batch=st.lists(events, min_size=50, max_size=120))
    def check(batch: list[dict[str, Any]]) -> None:
        mismatches = []
        for event, prepared in zip(batch, _prepare(node_sdk_build, batch), strict=True):
            if "refused" in prepared:
                body = json.dumps({"events": [event]}).encode()
                results, _ = read_batch(body, PRINCIPAL, None, 10)
                if results[0] is None:  # the server would have taken it
                    mismatches.append(f"node refused {prepared['refused']}: {event!r}")
                continue
            body = ('{"events":[' + prepared["wire"] + "]}").encode()
            results, submissions = read_batch(body, PRINCIPAL, None, 10)
            if results != [None]:
                # Node leaves some rules to the server (meta's size, say): fine when the
                # server refuses the event as the caller wrote it for the same field.
                as_written, _ = read_batch(
                    json.dumps({"events": [event]}).encode(), PRINCIPAL, None, 10
                )
                if as_written[0] is None or as_written[0].field != results[0].field:
                    mismatches.append(f"server refused {results[0]}: {prepared['wire']}")
            elif submissions[0].idempotency_key != prepared["key"]:
                mismatches.append(f"key differs: {prepared['wire']}")
        assert not mismatches, "\n".join(mismatches[:5])

    check()


def test_the_time_fixed_by_node_is_the_servers_reading_of_it(node_sdk_build: Path) -> None:
    """A Date with milliseconds goes out normalised, and the server reads the same instant."""
    event = {"metric": "m", "customerRef": "c", "quantity": 1, "ts": "2026-03-15T11:00:00.1239Z"}
    (prepared,) = _prepare(node_sdk_build, [event])
    wire = json.loads(prepared["wire"])
    assert wire["ts"] == "2026-03-15T11:00:00.123900Z"
    _, (submission,) = read_batch(
        ('{"events":[' + prepared["wire"] + "]}").encode(), PRINCIPAL, None, 10
    )
    assert submission.occurred_at == datetime(2026, 3, 15, 11, 0, 0, 123900, tzinfo=UTC)
