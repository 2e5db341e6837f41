"""The alert rules, their unit tests, the Prometheus config and the dashboard's
queries, through Prometheus's own tools (Debian's ``prometheus`` package:
``promtool`` and ``prometheus``).

Skipped locally when the package is missing; a failure under CI, where .ci/run
installs it.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.conftest import Api, event
from tests.e2e.test_alert_rules import served
from tools.alert_rules import DEFAULT_DASHBOARD, DEFAULT_RULES, load_dashboard
from tools.alert_rules.promql import as_promql

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_DIR = ROOT / "ops" / "prometheus"
RULE_TESTS = PROMETHEUS_DIR / "alerts.test.yml"


def installed(tool: str) -> str:
    binary = shutil.which(tool)
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail(f"{tool} is required under CI (.ci/run installs Debian's prometheus)")
        pytest.skip(f"{tool} is not installed (Debian's prometheus package)")
    return binary


@pytest.fixture(scope="module")
def promtool() -> str:
    return installed("promtool")


def run(*command: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_rules(promtool: str) -> None:
    done = run(promtool, "check", "rules", str(DEFAULT_RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 18 rules found" in done.stdout


def test_promtool_accepts_the_config_and_the_rules_it_loads(promtool: str) -> None:
    done = run(promtool, "check", "config", str(PROMETHEUS_DIR / "prometheus.yml"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 1 rule files found" in done.stdout


def test_the_rule_unit_tests_pass(promtool: str) -> None:
    done = run(promtool, "test", "rules", str(RULE_TESTS))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_unit_test_that_fires_it() -> None:
    alerts = {
        rule["alert"]
        for group in yaml.safe_load(DEFAULT_RULES.read_text())["groups"]
        for rule in group["rules"]
    }
    fired = {
        case["alertname"]
        for test in yaml.safe_load(RULE_TESTS.read_text())["tests"]
        for case in test["alert_rule_test"]
        if case["exp_alerts"]
    }
    assert fired == alerts


@pytest.mark.parametrize(
    ("before", "after", "caught"),
    [
        # A threshold: usage 40 minutes old no longer pages.
        (
            'seconds{target="live"}) > 1800',
            'seconds{target="live"}) > 3600',
            "StripeMeterUnpushedUsageCritical",
        ),
        # A label matcher: the shadow account's drift would page as live drift.
        ('max_drift_ratio{target="live"}', "max_drift_ratio", "StripeMeterDriftRatio"),
        # A wait: `for: 10m` made 20m.
        (">= 0.01\n        for: 10m", ">= 0.01\n        for: 20m", "StripeMeterDriftRatio"),
    ],
)
def test_the_rule_unit_tests_catch_a_changed_rule(
    promtool: str, tmp_path: Path, before: str, after: str, caught: str
) -> None:
    rules = DEFAULT_RULES.read_text()
    assert rules.count(before) == 1
    (tmp_path / "alerts.yml").write_text(rules.replace(before, after))
    shutil.copy(RULE_TESTS, tmp_path / "alerts.test.yml")
    done = run(promtool, "test", "rules", "alerts.test.yml", cwd=tmp_path)
    report = done.stdout + done.stderr
    assert done.returncode == 1, report
    assert "FAILED" in report
    assert f"alertname: {caught}" in report


# -- a real Prometheus scraping the app's /metrics -------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@pytest.fixture
def app_metrics(api: Api) -> Iterator[str]:
    """The app's /metrics after an ingest, served over HTTP as a scrape target sees it."""
    assert api.ingest(event()).status_code == 200
    assert api.ingest(event()).status_code == 200  # a duplicate: a second outcome
    api.settle()
    with served(api.client.get("/metrics").text.encode()) as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture
def prometheus(app_metrics: str, tmp_path: Path) -> Iterator[str]:
    """Prometheus scraping the app every second and evaluating alerts.yml: its base URL."""
    binary = installed("prometheus")
    config = yaml.safe_load((PROMETHEUS_DIR / "prometheus.yml").read_text())
    config["global"] = {"scrape_interval": "1s", "evaluation_interval": "1s"}
    config["rule_files"] = [str(DEFAULT_RULES)]
    for job in config["scrape_configs"]:  # both jobs scrape the one app here
        job["static_configs"] = [{"targets": [app_metrics]}]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    address = f"127.0.0.1:{free_port()}"
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address={address}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        url = f"http://{address}"
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, (tmp_path / "prometheus.log").read_text()
            try:
                up = query(url, "sum(up)")
                # Both jobs up, each scraped three times: rate() has samples to work on.
                scraped = query(url, "count_over_time(up[1m]) > 2")
                if up and float(up[0]["value"][1]) == 2 and len(scraped) == 2:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "prometheus.log").read_text()
            time.sleep(0.5)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()


def query(url: str, expr: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}", timeout=10
    ) as response:
        answer = json.load(response)
    assert answer["status"] == "success", answer
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


# The exposition is the same on both backends: one Prometheus run is enough.
@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_every_panel_query_and_rule_runs_in_a_real_prometheus(prometheus: str) -> None:
    queries, _ = load_dashboard(DEFAULT_DASHBOARD.read_text())
    answered = {}
    for panel_query in queries:
        try:
            answered[panel_query.name] = query(prometheus, as_promql(panel_query.expr))
        except urllib.error.HTTPError as error:  # 400: Prometheus refuses the query
            pytest.fail(f"{panel_query.name}: {error.read().decode()}")
    # Panels on what one ingest request sets show its series.
    outcomes = answered["panel 6 'Ingest rate by outcome' A"]
    assert {s["metric"]["outcome"] for s in outcomes} >= {"accepted", "duplicate"}
    assert answered["panel 7 'Ingest latency' B"]  # p95
    assert len(answered["panel 13 'Projection lag' A"]) >= 5
    lines = answered["panel 23 'Reconciliation lines by status' A"]
    assert {(s["metric"]["target"], s["metric"]["status"]) for s in lines} >= {
        ("live", "drift"),
        ("shadow", "drift"),
    }
    causes = answered["panel 24 'Drift lines by cause' A"]
    assert {s["metric"]["cause"] for s in causes} >= {"outside", "missing", "remapped"}
    verdicts = answered["panel 27 'Periods closed' A"]
    assert {s["metric"]["verdict"] for s in verdicts} == {"parity", "mismatch"}
    # Every rule evaluates without error.
    with urllib.request.urlopen(f"{prometheus}/api/v1/rules", timeout=10) as response:
        groups = json.load(response)["data"]["groups"]
    rules = [rule for group in groups for rule in group["rules"]]
    assert len(rules) == 18
    assert [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"] == []
