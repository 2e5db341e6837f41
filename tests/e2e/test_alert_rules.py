"""The alert rules watch only what /metrics really exports, and the checker proves it.

A rule on a series nobody exports never fires and never complains; these tests
run the checker against the app's own /metrics, and show that it catches such
a rule without taking PromQL's functions, keywords or labels for metrics.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import yaml

from tests.e2e.conftest import Api, event
from tools.alert_rules import (
    DEFAULT_RULES,
    check,
    load_rules,
    main,
    parse_exposition,
    referenced_metrics,
)

ROOT = Path(__file__).resolve().parents[2]
ALERTS_DOC = ROOT / "docs" / "ALERTS.md"


def scrape(api: Api) -> str:
    """/metrics after one ingest request, so that the HTTP histogram has series."""
    assert api.ingest(event()).status_code == 200
    response = api.client.get("/metrics")
    assert response.status_code == 200
    return response.text


def rules_file(body: str) -> str:
    return f"groups:\n  - name: test\n    rules:\n{body}"


def alert(name: str, expr: str) -> str:
    return (
        f"      - alert: {name}\n"
        f"        expr: '{expr}'\n"
        "        labels: {severity: warning}\n"
        "        annotations: {summary: test}\n"
    )


def test_every_rule_selects_only_metrics_that_metrics_exports(api: Api) -> None:
    text = scrape(api)
    rules, shape = load_rules(DEFAULT_RULES.read_text())
    assert shape == []
    assert len(rules) >= 10
    report = check(rules, parse_exposition(text))
    assert report.findings == []
    # The latency and 5xx rules select by route template and status: those labels exist.
    series = 'http_request_duration_seconds_count{method="POST",route="/v1/events/ingest",'
    assert f'{series}status="200"}}' in text


def test_the_issue_names_each_have_a_rule() -> None:
    rules, _ = load_rules(DEFAULT_RULES.read_text())
    watched = {name for rule in rules for name in referenced_metrics(rule.expr).metrics}
    assert watched >= {
        "stripemeter_reconciliation_max_drift_units",
        "stripemeter_reconciliation_max_drift_ratio",
        "stripemeter_reconciliation_last_run_timestamp_seconds",
        "stripemeter_oldest_unpushed_usage_seconds",
        "stripemeter_pending_intents",
        "stripemeter_projection_lag_events",
        "stripemeter_periods_closed_total",
        "http_request_duration_seconds_bucket",
        "http_request_duration_seconds_count",
    }


def test_a_rule_on_a_metric_nobody_exports_fails_by_name(api: Api) -> None:
    exposition = parse_exposition(scrape(api))
    rules, shape = load_rules(
        rules_file(
            alert("Fine", "max(stripemeter_pending_intents) > 0")
            + alert("MadeUp", "rate(stripemeter_usage_posted_total[5m]) > 0")
            # The family name of a counter and of a histogram are not series Prometheus stores.
            + alert("NoTotal", "increase(stripemeter_pushes[1h]) > 0")
            + alert("BareHistogram", "rate(http_request_duration_seconds[5m]) > 1")
        )
    )
    assert shape == []
    report = check(rules, exposition)
    assert [(f.rule, f.problem) for f in report.findings] == [
        ("MadeUp", "stripemeter_usage_posted_total is not in /metrics"),
        ("NoTotal", "stripemeter_pushes is not in /metrics"),
        ("BareHistogram", "http_request_duration_seconds is not in /metrics"),
    ]


def test_functions_keywords_labels_strings_and_durations_are_not_metrics() -> None:
    expr = """
        (histogram_quantile(0.95, sum by (le, route) (
          rate(requests_bucket{route="/v1/x", status=~"5..|4.."}[5m] offset 1h)
        )) > bool 0.5)
        * on (route) group_left (team) owners
        unless ignoring (le) topk(3, count_values("version", builds))
        or label_replace(absent(heartbeat), "dst", "$1", "src", "(.*)")  # not_a_metric
        or sum(max_over_time(lag[1h:5m])) without (instance) * 1e3 - 0x1F + Inf
        or {__name__="by_name", job="x"} @ start()
    """
    assert referenced_metrics(expr).metrics == (
        "requests_bucket",
        "owners",
        "builds",
        "heartbeat",
        "lag",
        "by_name",
    )
    # Grafana's interval variables stand for a duration.
    grafana = "sum(rate(x_total[$__rate_interval])) / sum(increase(y_total[${__range}]))"
    assert referenced_metrics(grafana).metrics == ("x_total", "y_total")


def test_a_misspelt_function_bad_syntax_a_name_regex_and_a_metricless_rule_are_findings() -> None:
    rules, _ = load_rules(
        rules_file(
            alert("Typo", "histogram_quantil(0.95, rate(x_bucket[5m])) > 1")
            + alert("Unbalanced", "max(x_bucket > 1")
            # promtool refuses grouping on a set operator; so does the parser.
            + alert("SetGrouping", "x_bucket and on (a) group_left x_count")
            + alert("Constant", "vector(1) > 0")
            + alert("ByRegex", 'sum({__name__=~"x_.*"}) > 0')
        )
    )
    exposition = parse_exposition("# TYPE x histogram\n")
    assert [(f.rule, f.problem) for f in check(rules, exposition).findings] == [
        ("Typo", "not PromQL: unknown function with name 'histogram_quantil'"),
        ("Unbalanced", "not PromQL: unclosed left parenthesis"),
        ("SetGrouping", "not PromQL: no grouping allowed for 'and' operation"),
        ("Constant", "the expression selects no metric"),
        ("ByRegex", '{__name__=~"x_.*"} matches names by a regex: unchecked'),
    ]


def test_the_rules_file_shape_is_checked() -> None:
    rules, shape = load_rules(
        rules_file(
            "      - alert: NoSeverity\n"
            "        expr: up == 0\n"
            "        for: five minutes\n"
            "        annotations: {summary: x}\n"
            "      - alert: NoSummary\n"
            "        expr: up == 0\n"
            "        labels: {severity: page}\n"
            "      - expr: up == 0\n"
        )
    )
    assert [rule.name for rule in rules] == ["NoSeverity", "NoSummary"]
    assert [(f.rule, f.problem) for f in shape] == [
        ("NoSeverity", "'for: five minutes' is not a duration like 5m"),
        ("NoSeverity", "labels.severity must be critical or warning"),
        ("NoSummary", "labels.severity must be critical or warning"),
        ("NoSummary", "annotations.summary is missing"),
        ("test rule #3", "'alert' (a valid name) or 'record' is required"),
    ]


def test_family_names_map_to_the_series_prometheus_stores() -> None:
    text_format = parse_exposition(
        "# TYPE jobs_total counter\n"
        "# TYPE wait_seconds histogram\n"
        "# TYPE queue_depth gauge\n"
        'queue_depth{queue="a"} 3\n'
    )
    assert {"jobs_total", "wait_seconds_bucket", "wait_seconds_count", "wait_seconds_sum"} <= (
        text_format.declared
    )
    assert not text_format.has("wait_seconds")
    assert text_format.with_samples == {"queue_depth"}
    openmetrics = parse_exposition("# TYPE jobs counter\njobs_total 1\n# EOF\n")
    assert openmetrics.has("jobs_total")
    assert not openmetrics.has("jobs")


def test_every_alert_has_its_runbook_section() -> None:
    anchors = {
        re.sub(r"[^a-z0-9_ -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in ALERTS_DOC.read_text().splitlines()
        if line.startswith("#")
    }
    rules, _ = load_rules(DEFAULT_RULES.read_text())
    document = load_yaml_alerts()
    for rule in rules:
        url = document[rule.name]["annotations"]["runbook_url"]
        assert url == f"docs/ALERTS.md#{rule.name.lower()}", rule.name
        assert rule.name.lower() in anchors, f"docs/ALERTS.md has no section {rule.name}"


def load_yaml_alerts() -> dict[str, dict[str, dict[str, str]]]:
    groups = yaml.safe_load(DEFAULT_RULES.read_text())["groups"]
    return {rule["alert"]: rule for group in groups for rule in group["rules"]}


# -- the command, against a URL -------------------------------------------------


@contextlib.contextmanager
def served(body: bytes) -> Iterator[int]:
    """``body`` served over real HTTP as a scrape target's /metrics; yields the port."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def metrics_url(api: Api) -> Iterator[str]:
    """The app's /metrics text, served over real HTTP as a scrape target would see it."""
    with served(scrape(api).encode()) as port:
        yield f"http://127.0.0.1:{port}/metrics"


def test_scripts_check_alerts_passes_against_the_app(metrics_url: str) -> None:
    done = subprocess.run(
        [str(ROOT / "scripts" / "check-alerts"), metrics_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.splitlines()[-1].startswith("ok: ")


def test_the_command_lists_each_missing_metric_and_exits_1(
    metrics_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rules = tmp_path / "rules.yml"
    rules.write_text(rules_file(alert("Ghost", "a_ghost_metric > 0 or another_ghost > 0")))
    assert main(["--rules", str(rules), metrics_url]) == 1
    out = capsys.readouterr().out
    assert "Ghost: a_ghost_metric is not in /metrics" in out
    assert "Ghost: another_ghost is not in /metrics" in out
    assert main(["--rules", str(rules), "http://127.0.0.1:1/metrics"]) == 2
