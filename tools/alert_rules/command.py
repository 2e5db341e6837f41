"""``scripts/check-alerts [--rules FILE] [--dashboard FILE] [SOURCE ...]``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path

from tools.alert_rules.dashboard import load_dashboard
from tools.alert_rules.errors import AlertRulesError
from tools.alert_rules.exposition import Exposition, parse_exposition, read_source
from tools.alert_rules.rules import check, load_rules, promtool

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_RULES = ROOT / "ops" / "prometheus" / "alerts.yml"
DEFAULT_DASHBOARD = ROOT / "ops" / "grafana" / "dashboards" / "stripemeter.json"
DEFAULT_SOURCE = "http://127.0.0.1:3000/metrics"


def main(argv: Iterable[str] | None = None) -> int:
    """Check rules and dashboards against /metrics: 0 clean, 1 findings, 2 unreadable."""
    cli = argparse.ArgumentParser(
        prog="check-alerts",
        description="Check that every metric an alert rule or a dashboard panel selects"
        " is exported by /metrics.",
    )
    cli.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="Prometheus rules file")
    cli.add_argument(
        "--dashboard",
        type=Path,
        action="append",
        dest="dashboards",
        metavar="FILE",
        help=f"Grafana dashboard JSON; may repeat (default: {DEFAULT_DASHBOARD.relative_to(ROOT)})",
    )
    cli.add_argument(
        "sources",
        nargs="*",
        default=[DEFAULT_SOURCE],
        metavar="SOURCE",
        help="a /metrics URL, a file, or - for stdin; several are merged (API and worker)",
    )
    args = cli.parse_args(None if argv is None else list(argv))
    try:
        rules, findings = load_rules(args.rules.read_text())
        queries = []
        for dashboard in args.dashboards or [DEFAULT_DASHBOARD]:
            found, problems = load_dashboard(dashboard.read_text())
            queries += found
            findings += problems
        exposition = Exposition()
        for source in args.sources:
            exposition.merge(parse_exposition(read_source(source)))
    except (OSError, AlertRulesError) as error:
        print(f"check-alerts: {error}", file=sys.stderr)
        return 2
    # One check, so that a panel may graph what a recording rule records.
    report = check([*rules, *queries], exposition)
    findings += report.findings
    if (failed := promtool(args.rules)) is not None:
        findings.append(failed)
    for finding in findings:
        print(f"{finding.rule}: {finding.problem}")
    for name in sorted(report.without_samples):
        print(f"note: {name} is declared but has no series yet")
    verdict = "FAILED" if findings else "ok"
    print(
        f"{verdict}: {len(rules)} rules, {len(queries)} panel queries,"
        f" {len(report.names)} metric names checked"
    )
    return 1 if findings else 0
