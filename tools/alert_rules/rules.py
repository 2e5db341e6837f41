"""The rules file (its shape), and the check of rules and panel queries against an exposition."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml  # type: ignore[import-untyped]  # PyYAML: a dev dependency; this is a dev/ops tool

from tools.alert_rules.errors import AlertRulesError
from tools.alert_rules.exposition import Exposition
from tools.alert_rules.promql import is_duration, referenced_metrics

SEVERITIES = frozenset({"critical", "warning"})
ALERT_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


@dataclass(frozen=True)
class Rule:
    """An expression to check: a rule's (``recorded`` when it is a recording rule), or
    a dashboard panel's query, named after its panel."""

    name: str
    expr: str
    recorded: bool


@dataclass(frozen=True)
class Finding:
    rule: str
    problem: str


def load_rules(text: str) -> tuple[list[Rule], list[Finding]]:
    """The rules of a Prometheus rules file, and what is wrong with its shape."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise AlertRulesError(f"not YAML: {error}") from error
    if not isinstance(document, dict) or not isinstance(document.get("groups"), list):
        raise AlertRulesError("a rules file is a mapping with a 'groups' list")
    rules: list[Rule] = []
    findings: list[Finding] = []
    seen: set[str] = set()
    for index, group in enumerate(document["groups"]):
        name = _text(group.get("name")) if isinstance(group, dict) else None
        if name is None:
            findings.append(Finding(f"group #{index + 1}", "a group needs a name"))
            continue
        if name in seen:
            findings.append(Finding(name, "group name used twice"))
        seen.add(name)
        if not isinstance(group.get("rules"), list) or not group["rules"]:
            findings.append(Finding(name, "a group needs a non-empty 'rules' list"))
            continue
        for position, raw in enumerate(group["rules"]):
            rule, problems = _read_rule(f"{name} rule #{position + 1}", raw)
            findings += problems
            if rule is not None:
                rules.append(rule)
    alerts = [rule.name for rule in rules if not rule.recorded]
    findings += [Finding(name, "alert name used twice") for name in _repeated(alerts)]
    return rules, findings


def _read_rule(where: str, raw: object) -> tuple[Rule | None, list[Finding]]:
    if not isinstance(raw, dict):
        return None, [Finding(where, "a rule is a mapping")]
    expr = _text(raw.get("expr"))
    record = _text(raw.get("record"))
    if record is not None:
        if expr is None:
            return None, [Finding(record, "expr is missing")]
        return Rule(record, expr, recorded=True), []
    name = _text(raw.get("alert"))
    if name is None or ALERT_NAME.fullmatch(name) is None:
        return None, [Finding(where, "'alert' (a valid name) or 'record' is required")]
    problems: list[Finding] = []
    if expr is None:
        problems.append(Finding(name, "expr is missing"))
    pending = raw.get("for")
    if pending is not None and not is_duration(str(pending)):
        problems.append(Finding(name, f"'for: {pending}' is not a duration like 5m"))
    labels = raw.get("labels")
    if not isinstance(labels, dict) or labels.get("severity") not in SEVERITIES:
        choices = " or ".join(sorted(SEVERITIES))
        problems.append(Finding(name, f"labels.severity must be {choices}"))
    annotations = raw.get("annotations")
    if not isinstance(annotations, dict) or _text(annotations.get("summary")) is None:
        problems.append(Finding(name, "annotations.summary is missing"))
    return (Rule(name, expr, recorded=False) if expr else None), problems


def _repeated(names: Sequence[str]) -> list[str]:
    return [name for name, uses in Counter(names).items() if uses > 1]


def _text(value: object) -> str | None:
    """The value when it is a non-blank string."""
    return value if isinstance(value, str) and value.strip() else None


@dataclass
class Report:
    findings: list[Finding]
    rules: int
    names: set[str]
    without_samples: set[str]

    @property
    def ok(self) -> bool:
        return not self.findings


def check(rules: Sequence[Rule], exposition: Exposition) -> Report:
    """Every name each rule selects must be exported (or recorded by another rule)."""
    recorded = {rule.name for rule in rules if rule.recorded}
    findings: list[Finding] = []
    names: set[str] = set()
    for rule in rules:
        try:
            selected = referenced_metrics(rule.expr)
        except AlertRulesError as error:
            findings.append(Finding(rule.name, str(error)))
            continue
        if not selected.metrics and not selected.patterns:
            findings.append(Finding(rule.name, "the expression selects no metric"))
        for pattern in selected.patterns:
            findings.append(Finding(rule.name, f"{pattern} matches names by a regex: unchecked"))
        for name in selected.metrics:
            names.add(name)
            if not exposition.has(name) and name not in recorded:
                findings.append(Finding(rule.name, f"{name} is not in /metrics"))
    without_samples = {
        name
        for name in names
        if name in exposition.declared and name not in exposition.with_samples
    }
    return Report(findings, len(rules), names, without_samples)


def promtool(rules_path: Path) -> Finding | None:
    """``promtool check rules``, when promtool is installed; None when it passes or is absent."""
    binary = shutil.which("promtool")
    if binary is None:
        return None
    result = subprocess.run(
        [binary, "check", "rules", str(rules_path)], capture_output=True, text=True, check=False
    )
    if result.returncode == 0:
        return None
    return Finding("promtool", (result.stdout + result.stderr).strip())
