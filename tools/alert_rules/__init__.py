"""Check Prometheus alert rules and Grafana panels against what ``/metrics`` exports.

A rule that watches a series nobody exports never fires, and a panel that
graphs one stays empty; nothing says so. The checker reads a rules file
(``rules``) and dashboards (``dashboard``), finds every metric name each
expression selects with a real PromQL parser (``promql``) and looks each one
up in a ``/metrics`` exposition fetched over HTTP, or read from a file or
stdin (``exposition``). ``scripts/check-alerts`` runs it (``command``).
"""

from tools.alert_rules.command import DEFAULT_DASHBOARD, DEFAULT_RULES, main
from tools.alert_rules.dashboard import load_dashboard
from tools.alert_rules.errors import AlertRulesError
from tools.alert_rules.exposition import Exposition, parse_exposition, read_source
from tools.alert_rules.promql import Expression, referenced_metrics
from tools.alert_rules.rules import Finding, Report, Rule, check, load_rules

__all__ = [
    "DEFAULT_DASHBOARD",
    "DEFAULT_RULES",
    "AlertRulesError",
    "Exposition",
    "Expression",
    "Finding",
    "Report",
    "Rule",
    "check",
    "load_dashboard",
    "load_rules",
    "main",
    "parse_exposition",
    "read_source",
    "referenced_metrics",
]
