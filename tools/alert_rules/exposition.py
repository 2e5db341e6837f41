"""What a ``/metrics`` exposition exports, read from a URL, a file or stdin."""

from __future__ import annotations

import re
import sys
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tools.alert_rules.errors import AlertRulesError

# Series that Prometheus writes itself, for every target or rule: never in /metrics.
PROMETHEUS_SERIES = frozenset(
    {
        "up",
        "scrape_duration_seconds",
        "scrape_samples_scraped",
        "scrape_samples_post_metric_relabeling",
        "scrape_series_added",
        "ALERTS",
        "ALERTS_FOR_STATE",
    }
)

_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{ ]")


@dataclass
class Exposition:
    """The series names a ``/metrics`` text makes queryable in Prometheus."""

    with_samples: set[str] = field(default_factory=set)
    declared: set[str] = field(default_factory=set)

    def has(self, name: str) -> bool:
        return name in self.with_samples or name in self.declared or name in PROMETHEUS_SERIES

    def merge(self, other: Exposition) -> None:
        self.with_samples |= other.with_samples
        self.declared |= other.declared


def parse_exposition(text: str) -> Exposition:
    """Read the Prometheus text format (or OpenMetrics) into queryable series names.

    A family declared by ``# TYPE`` counts even without samples yet: a labelled
    gauge nobody has set is still exported by the code. The family name is
    mapped to the series Prometheus stores: a histogram ``x`` is ``x_bucket``,
    ``x_count``, ``x_sum``; an OpenMetrics counter ``x`` is ``x_total``.
    """
    openmetrics = any(line.strip() == "# EOF" for line in text.splitlines())
    found = Exposition()
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("# TYPE "):
            parts = line.split()
            if len(parts) < 4:
                raise AlertRulesError(f"malformed TYPE line: {line}")
            found.declared |= _series_of(parts[2], parts[3], openmetrics)
        elif line and not line.startswith("#"):
            sample = _SAMPLE.match(line + " ")
            if sample is None:
                raise AlertRulesError(f"malformed sample line: {line}")
            found.with_samples.add(sample.group(1))
    return found


def _series_of(family: str, kind: str, openmetrics: bool) -> set[str]:
    if kind == "histogram":
        return {f"{family}_bucket", f"{family}_count", f"{family}_sum"}
    if kind == "gaugehistogram":
        return {f"{family}_bucket", f"{family}_gcount", f"{family}_gsum"}
    if kind == "summary":
        return {family, f"{family}_count", f"{family}_sum"}
    if kind == "counter" and openmetrics:
        return {f"{family}_total"}
    if kind == "info" and openmetrics:
        return {f"{family}_info"}
    return {family}


def read_source(source: str, timeout: float = 10.0) -> str:
    """The exposition text at a URL, in a file, or on stdin (``-``)."""
    if source == "-":
        return sys.stdin.read()
    if source.startswith(("http://", "https://")):
        request = urllib.request.Request(source, headers={"Accept": "text/plain"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                body: bytes = response.read()
        except OSError as error:
            raise AlertRulesError(f"cannot fetch {source}: {error}") from error
        return body.decode()
    try:
        return Path(source).read_text()
    except OSError as error:
        raise AlertRulesError(f"cannot read {source}: {error}") from error
