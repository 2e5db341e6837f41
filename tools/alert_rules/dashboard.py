"""A Grafana dashboard's queries, and what is wrong with its shape.

Each target of each panel is a PromQL query; ``load_dashboard`` returns them as
rules named after their panel, so that ``check`` holds them to the same test as
the alert rules: every metric they select must be exported. A panel without a
datasource or without a query draws nothing, and two panels with one id make
Grafana drop one: those are findings too.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from tools.alert_rules.errors import AlertRulesError
from tools.alert_rules.rules import Finding, Rule

# Panels that query nothing by design.
WITHOUT_QUERIES = frozenset({"row", "text", "news", "dashlist", "alertlist", "annolist"})


def load_dashboard(text: str) -> tuple[list[Rule], list[Finding]]:
    """The PromQL queries of a dashboard's panels, and the findings about its shape."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as error:
        raise AlertRulesError(f"not JSON: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("panels"), list):
        raise AlertRulesError("a dashboard is an object with a 'panels' list")
    queries: list[Rule] = []
    findings: list[Finding] = []
    panels = list(_panels(document["panels"]))
    ids = Counter(panel.get("id") for panel in panels)
    for panel_id, uses in ids.items():
        if uses > 1:
            findings.append(Finding(f"panel id {panel_id}", f"used by {uses} panels"))
    for panel in panels:
        where = f"panel {panel.get('id')} {panel.get('title')!r}"
        if not isinstance(panel.get("id"), int):
            findings.append(Finding(where, "a panel needs an integer id"))
        if panel.get("type") in WITHOUT_QUERIES:
            continue
        found, problems = _read_panel(where, panel)
        queries += found
        findings += problems
    return queries, findings


def _panels(panels: list[Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those inside (collapsed) rows included."""
    for panel in panels:
        if not isinstance(panel, dict):
            raise AlertRulesError("a panel is an object")
        yield panel
        yield from _panels(panel.get("panels") or [])


def _read_panel(where: str, panel: dict[str, Any]) -> tuple[list[Rule], list[Finding]]:
    findings: list[Finding] = []
    source = _datasource_uid(panel.get("datasource"))
    if source is None:
        findings.append(Finding(where, "no datasource (a uid)"))
    targets = panel.get("targets")
    if not isinstance(targets, list) or not targets:
        return [], [*findings, Finding(where, "no targets: the panel draws nothing")]
    queries: list[Rule] = []
    for position, target in enumerate(targets):
        ref = target.get("refId") if isinstance(target, dict) else None
        name = f"{where} {ref or f'target #{position + 1}'}"
        expr = target.get("expr") if isinstance(target, dict) else None
        if not isinstance(expr, str) or not expr.strip():
            findings.append(Finding(name, "no expr"))
            continue
        own = target.get("datasource")
        if own is not None and _datasource_uid(own) != source:
            findings.append(Finding(name, "its datasource is not the panel's"))
        queries.append(Rule(name, expr, recorded=False))
    refs = Counter(t.get("refId") for t in targets if isinstance(t, dict))
    findings += [Finding(where, f"refId {ref!r} used twice") for ref, n in refs.items() if n > 1]
    return queries, findings


def _datasource_uid(datasource: object) -> str | None:
    if isinstance(datasource, dict) and isinstance(datasource.get("uid"), str):
        return datasource["uid"] or None
    return None
