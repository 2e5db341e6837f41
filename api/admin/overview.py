"""The overview's numbers: the samples ``/metrics`` exposes and the checks of
``/health/ready``, read from the same objects (nothing recomputed here)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from api.routes.health import readiness
from api.services import Services

# (heading, metric family as /metrics names it)
SHOWN = (
    ("Usage events received (since this process started)", "stripemeter_ingest_events"),
    ("Late events (since this process started)", "stripemeter_late_events"),
    ("Pending pushes (intents not yet confirmed)", "stripemeter_pending_intents"),
    ("Usage periods Stripe does not hold yet", "stripemeter_unpushed_periods"),
    ("Oldest unpushed usage (seconds)", "stripemeter_oldest_unpushed_usage_seconds"),
    (
        "Reconciliation lines by status (drift = lines that differ)",
        "stripemeter_reconciliation_lines",
    ),
    ("Projection lag (events)", "stripemeter_projection_lag_events"),
)


@dataclass(frozen=True)
class Sample:
    labels: str
    value: float


@dataclass(frozen=True)
class Family:
    heading: str
    name: str
    samples: list[Sample]


def overview(svc: Services) -> tuple[bool, dict[str, Any], list[Family]]:
    """Readiness with its checks, then the metric families the overview shows."""
    ready, checks = readiness(svc)  # also refreshes the projection lag gauges
    found: dict[str, list[Sample]] = {}
    for family in svc.metrics.exposed.collect():
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            labels = ", ".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            found.setdefault(family.name, []).append(Sample(labels, sample.value))
    families = [Family(heading, name, found.get(name, [])) for heading, name in SHOWN]
    return ready, checks, families
