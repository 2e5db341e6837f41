"""The Grafana dashboard graphs only what /metrics exports, and its provisioning fits compose.

No Grafana can be installed here (it is in neither Debian's archive nor PyPI), so
what Grafana would check at start is checked structurally: every panel has a
datasource that provisioning defines and queries that parse as PromQL and select
exported metrics; panel ids are unique; the provider reads the folder compose
mounts; the datasource points at the Prometheus compose starts, which scrapes
the API and the worker where they listen. tests/e2e/test_promtool.py evaluates
every panel query in a real Prometheus.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from adapters.settings import Settings
from tests.compose_file import environment as compose_environment
from tests.e2e.conftest import Api, event
from tools.alert_rules import (
    DEFAULT_DASHBOARD,
    check,
    load_dashboard,
    main,
    parse_exposition,
    referenced_metrics,
)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "ops" / "grafana"
PROVISIONING = GRAFANA / "provisioning"
COMPOSE = ROOT / "compose.yaml"
PROMETHEUS_CONFIG = ROOT / "ops" / "prometheus" / "prometheus.yml"


def scrape(api: Api) -> str:
    assert api.ingest(event()).status_code == 200
    response = api.client.get("/metrics")
    assert response.status_code == 200
    return response.text


def dashboard() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(DEFAULT_DASHBOARD.read_text())
    return document


def panel(panel_id: int, title: str, *exprs: str, **fields: Any) -> dict[str, Any]:
    return {
        "id": panel_id,
        "type": "timeseries",
        "title": title,
        "datasource": {"type": "prometheus", "uid": "ds"},
        "targets": [{"refId": chr(65 + i), "expr": e} for i, e in enumerate(exprs)],
        **fields,
    }


def compose_service(name: str) -> dict[str, Any]:
    service: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())["services"][name]
    return service


def mounts(service: dict[str, Any]) -> dict[Path, str]:
    """Host folder (resolved from compose.yaml's folder) -> container path."""
    found = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        found[(ROOT / host).resolve()] = container
    return found


def test_every_panel_selects_only_metrics_that_metrics_exports(api: Api) -> None:
    queries, shape = load_dashboard(DEFAULT_DASHBOARD.read_text())
    assert shape == []
    assert len(queries) >= 30
    report = check(queries, parse_exposition(scrape(api)))
    assert report.findings == []


def test_the_dashboard_covers_what_the_issue_names() -> None:
    queries, _ = load_dashboard(DEFAULT_DASHBOARD.read_text())
    graphed = {name for query in queries for name in referenced_metrics(query.expr).metrics}
    assert graphed >= {
        "stripemeter_ingest_events_total",  # ingest rate and outcomes
        "http_request_duration_seconds_bucket",  # ingest latency
        "stripemeter_projection_lag_events",
        "stripemeter_pushes_total",  # pushes and their failures
        "stripemeter_pending_intents",
        "stripemeter_oldest_unpushed_usage_seconds",
        "stripemeter_reconciliation_drift_lines",  # drift by cause
        "stripemeter_reconciliation_max_drift_units",
        "stripemeter_periods_closed_total",  # closed periods and parity verdicts
        "stripemeter_late_events_total",
        "stripemeter_corrections_total",
    }
    rows = [p["title"] for p in dashboard()["panels"] if p["type"] == "row"]
    assert rows == [
        "Overview",
        "Ingest",
        "Projections",
        "Pushes to Stripe",
        "Reconciliation, drift and parity",
        "Late events, corrections and caps",
    ]


def test_a_panel_on_a_metric_nobody_exports_fails_by_panel(api: Api, tmp_path: Path) -> None:
    text = json.dumps(
        {
            "panels": [
                panel(1, "Fine", "sum(rate(stripemeter_ingest_events_total[$__rate_interval]))"),
                panel(
                    2, "Ghost", "max(stripemeter_ingest_rate)", "max(stripemeter_pending_intents)"
                ),
            ]
        }
    )
    queries, shape = load_dashboard(text)
    assert shape == []
    exposition = scrape(api)
    report = check(queries, parse_exposition(exposition))
    assert [(f.rule, f.problem) for f in report.findings] == [
        ("panel 2 'Ghost' A", "stripemeter_ingest_rate is not in /metrics"),
    ]
    # The command: the default rules pass, the dashboard given fails, exit 1.
    (tmp_path / "dashboard.json").write_text(text)
    (tmp_path / "metrics.txt").write_text(exposition)
    assert (
        main(["--dashboard", str(tmp_path / "dashboard.json"), str(tmp_path / "metrics.txt")]) == 1
    )


def test_the_command_checks_the_shipped_dashboard_by_default(
    api: Api, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "metrics.txt").write_text(scrape(api))
    assert main([str(tmp_path / "metrics.txt")]) == 0
    last = capsys.readouterr().out.splitlines()[-1]
    assert last.startswith("ok: 18 rules, "), last
    assert f"{len(load_dashboard(DEFAULT_DASHBOARD.read_text())[0])} panel queries" in last


def test_the_dashboard_shape_is_checked() -> None:
    text = json.dumps(
        {
            "panels": [
                {"id": 1, "type": "row", "title": "A row", "panels": []},
                panel(2, "No datasource", "up", datasource=None),
                panel(3, "No query"),
                panel(2, "Same id", "up"),
                {
                    "id": 4,
                    "type": "row",
                    "title": "Collapsed",
                    "collapsed": True,
                    "panels": [panel(5, "Inside", "up", "")],
                },
                panel(6, "Bad PromQL", "sum(up"),
                {**panel(7, "Twice A", "up"), "targets": [{"refId": "A", "expr": "up"}] * 2},
            ]
        }
    )
    queries, shape = load_dashboard(text)
    assert [(f.rule, f.problem) for f in shape] == [
        ("panel id 2", "used by 2 panels"),
        ("panel 2 'No datasource'", "no datasource (a uid)"),
        ("panel 3 'No query'", "no targets: the panel draws nothing"),
        ("panel 5 'Inside' B", "no expr"),
        ("panel 7 'Twice A'", "refId 'A' used twice"),
    ]
    report = check(queries, parse_exposition("# TYPE up gauge\n"))
    assert [(f.rule, f.problem) for f in report.findings] == [
        ("panel 6 'Bad PromQL' A", "not PromQL: unclosed left parenthesis"),
    ]


def test_every_panel_uses_the_provisioned_datasource() -> None:
    provisioned = yaml.safe_load((PROVISIONING / "datasources" / "prometheus.yml").read_text())
    (source,) = provisioned["datasources"]
    assert source["type"] == "prometheus"
    panels = [p for p in dashboard()["panels"] if p["type"] != "row"]
    assert {p["datasource"]["uid"] for p in panels} == {source["uid"]}
    targets = [t for p in panels for t in p["targets"]]
    assert {t["datasource"]["uid"] for t in targets} == {source["uid"]}
    ids = [p["id"] for p in dashboard()["panels"]]
    assert len(ids) == len(set(ids))
    # It points at the compose service Prometheus runs as, on Prometheus's own port.
    assert source["url"] == "http://prometheus:9090"
    assert compose_service("prometheus")["ports"] == ["9090:9090"]


def test_grafana_is_provisioned_from_ops_grafana_in_compose() -> None:
    grafana = compose_service("grafana")
    assert grafana["profiles"] == ["observability"]
    mounted = mounts(grafana)
    assert mounted[PROVISIONING.resolve()] == "/etc/grafana/provisioning"
    providers = yaml.safe_load((PROVISIONING / "dashboards" / "stripemeter.yml").read_text())
    (provider,) = providers["providers"]
    assert provider["type"] == "file"
    # The provider reads the folder compose mounts the dashboards into.
    assert mounted[DEFAULT_DASHBOARD.parent.resolve()] == provider["options"]["path"]
    home = Path(grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"])
    assert home == Path(provider["options"]["path"]) / DEFAULT_DASHBOARD.name


def test_prometheus_in_compose_scrapes_the_api_and_the_worker_where_they_listen() -> None:
    prometheus = compose_service("prometheus")
    assert prometheus["profiles"] == ["observability"]
    (config_flag,) = [a for a in prometheus["command"] if a.startswith("--config.file=")]
    config = Path(config_flag.split("=", 1)[1])
    assert mounts(prometheus)[PROMETHEUS_CONFIG.parent.resolve()] == str(config.parent)
    document = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    assert document["rule_files"] == ["alerts.yml"]  # beside it, in the same mount
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in document["scrape_configs"]
    }
    defaults = Settings.from_env({})
    assert targets == {
        "stripemeter-api": [f"api:{defaults.port}"],
        "stripemeter-worker": [f"worker:{defaults.worker_metrics_port}"],
    }
    assert {"api", "worker"} <= set(yaml.safe_load(COMPOSE.read_text())["services"])
    # Each scraped service listens beyond its own container, or its target is down.
    for service in ("api", "worker"):
        settings = Settings.from_env(compose_environment(service))
        assert settings.host == "0.0.0.0", service
