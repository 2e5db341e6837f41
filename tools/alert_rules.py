"""Check Prometheus alert rules against what ``/metrics`` really exports.

A rule that watches a series nobody exports never fires, and nothing says so.
This module reads a rules file, finds every metric name each expression
selects, and looks each one up in a ``/metrics`` exposition (fetched over
HTTP, or read from a file or stdin). ``scripts/check-alerts`` runs it.

The PromQL reading is a tokenizer, not a parser: it knows strings, comments,
label matchers in ``{}``, ranges in ``[]``, numbers and durations, keywords
and the label lists after ``by``/``without``/``on``/``ignoring``/``group_*``,
and the names of PromQL's functions and aggregations. What is left are
metric names. An unknown function name is reported too (promtool would
refuse the file; this catches the typo where promtool is not installed).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import urllib.request
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml  # type: ignore[import-untyped]  # PyYAML: a dev dependency; this is a dev/ops tool

DEFAULT_RULES = Path(__file__).resolve().parents[1] / "ops" / "prometheus" / "alerts.yml"
DEFAULT_SOURCE = "http://127.0.0.1:3000/metrics"
SEVERITIES = frozenset({"critical", "warning"})

# fmt: off
FUNCTIONS = frozenset(
    {
        "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh",
        "avg_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh",
        "count_over_time", "day_of_month", "day_of_week", "day_of_year", "days_in_month", "deg",
        "delta", "deriv", "double_exponential_smoothing", "end", "exp", "floor", "histogram_avg",
        "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
        "histogram_stdvar", "histogram_sum", "holt_winters", "hour", "idelta", "increase", "info",
        "irate", "label_join", "label_replace", "last_over_time", "ln", "log10", "log2",
        "mad_over_time", "max_over_time", "min_over_time", "minute", "month", "pi",
        "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets",
        "round", "scalar", "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc",
        "sort_desc", "sqrt", "start", "stddev_over_time", "stdvar_over_time", "sum_over_time",
        "tan", "tanh", "time", "timestamp", "vector", "year",
    }
)
AGGREGATIONS = frozenset(
    {
        "avg", "bottomk", "count", "count_values", "group", "limit_ratio", "limitk", "max", "min",
        "quantile", "stddev", "stdvar", "sum", "topk",
    }
)
# fmt: on
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "atan2", "inf", "nan"})
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

_IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+|(?:[0-9]+(?:ms|[smhdwy]))+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
)
_LABEL_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*")
_OPERATOR = re.compile(r"\s*(=~|!~|!=|=)")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|[smhdwy]))+")
_SAMPLE = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{ ]")


class AlertRulesError(Exception):
    """A rules file or an exposition that cannot be read at all."""


@dataclass(frozen=True)
class Expression:
    """What one PromQL expression selects."""

    metrics: tuple[str, ...]
    unknown_functions: tuple[str, ...]


def referenced_metrics(expr: str) -> Expression:
    """The metric names an expression selects, in order of first use."""
    metrics: list[str] = []
    unknown: list[str] = []
    i, end = 0, len(expr)
    while i < end:
        char = expr[i]
        if char.isspace():
            i += 1
        elif char == "#":
            newline = expr.find("\n", i)
            i = end if newline < 0 else newline + 1
        elif char in "\"'`":
            i = _skip_string(expr, i)
        elif char == "{":
            i, name = _read_matchers(expr, i)
            if name is not None:
                metrics.append(name)
        elif char == "[":
            close = expr.find("]", i)
            i = end if close < 0 else close + 1
        elif (number := _NUMBER.match(expr, i)) is not None:
            i = number.end()
        elif (word := _IDENTIFIER.match(expr, i)) is not None:
            name = word.group()
            i = word.end()
            after = _skip_blank(expr, i)
            following = expr[after] if after < end else ""
            if name.lower() in GROUPING:
                if following == "(":
                    i = _skip_parens(expr, after)
            elif name.lower() in KEYWORDS or _is_aggregation(name, expr, after):
                pass  # an operator, not a metric
            elif following == "(":
                if name not in FUNCTIONS:
                    unknown.append(name)
            else:
                metrics.append(name)
        else:
            i += 1
    return Expression(tuple(dict.fromkeys(metrics)), tuple(dict.fromkeys(unknown)))


def _is_aggregation(name: str, expr: str, after: int) -> bool:
    """``sum(...)``, ``sum by (x) (...)``: a metric may not be called ``sum`` then."""
    if name.lower() not in AGGREGATIONS:
        return False
    return expr[after : after + 1] == "(" or _next_word(expr, after).lower() in {"by", "without"}


def _skip_blank(text: str, i: int) -> int:
    while i < len(text) and text[i].isspace():
        i += 1
    return i


def _next_word(text: str, i: int) -> str:
    word = _IDENTIFIER.match(text, i)
    return word.group() if word else ""


def _skip_string(text: str, i: int) -> int:
    quote = text[i]
    i += 1
    while i < len(text):
        if text[i] == "\\" and quote != "`":
            i += 2
            continue
        if text[i] == quote:
            return i + 1
        i += 1
    raise AlertRulesError(f"unterminated string in: {text}")


def _skip_parens(text: str, i: int) -> int:
    depth = 0
    while i < len(text):
        if text[i] in "\"'`":
            i = _skip_string(text, i)
            continue
        if text[i] == "(":
            depth += 1
        elif text[i] == ")":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise AlertRulesError(f"unbalanced parentheses in: {text}")


def _read_matchers(text: str, i: int) -> tuple[int, str | None]:
    """Skip a ``{...}`` block; return the metric name of a ``__name__="x"`` matcher."""
    name: str | None = None
    i += 1
    while i < len(text):
        char = text[i]
        if char == "}":
            return i + 1, name
        matcher = _LABEL_MATCHER.match(text, i)
        if matcher is not None:
            i = _skip_blank(text, matcher.end())
            if i < len(text) and text[i] in "\"'`":
                start = i
                i = _skip_string(text, i)
                if matcher.group(1) == "__name__" and matcher.group(2) == "=":
                    name = text[start + 1 : i - 1]
            continue
        if char in "\"'`":  # Prometheus 3 quotes names: {"my.metric", "my.label"="x"}
            start = i
            i = _skip_string(text, i)
            operator = _OPERATOR.match(text, i)
            if operator is None:
                name = text[start + 1 : i - 1]
            else:
                i = _skip_blank(text, operator.end())
                if i < len(text) and text[i] in "\"'`":
                    i = _skip_string(text, i)
            continue
        i += 1
    raise AlertRulesError(f"unterminated label matchers in: {text}")


# -- the exposition -----------------------------------------------------------


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


# -- the rules file -----------------------------------------------------------


@dataclass(frozen=True)
class Rule:
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
    if name is None or _IDENTIFIER.fullmatch(name) is None:
        return None, [Finding(where, "'alert' (a valid name) or 'record' is required")]
    problems: list[Finding] = []
    if expr is None:
        problems.append(Finding(name, "expr is missing"))
    pending = raw.get("for")
    if pending is not None and _DURATION.fullmatch(str(pending)) is None:
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


# -- the check ----------------------------------------------------------------


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
        if not selected.metrics:
            findings.append(Finding(rule.name, "the expression selects no metric"))
        for function in selected.unknown_functions:
            findings.append(Finding(rule.name, f"{function}() is not a PromQL function"))
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


def main(argv: Iterable[str] | None = None) -> int:
    """``scripts/check-alerts [--rules FILE] [SOURCE ...]``: 0 clean, 1 findings, 2 unreadable."""
    cli = argparse.ArgumentParser(
        prog="check-alerts",
        description="Check that every metric an alert rule selects is exported by /metrics.",
    )
    cli.add_argument("--rules", type=Path, default=DEFAULT_RULES, help="Prometheus rules file")
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
        exposition = Exposition()
        for source in args.sources:
            exposition.merge(parse_exposition(read_source(source)))
    except (OSError, AlertRulesError) as error:
        print(f"check-alerts: {error}", file=sys.stderr)
        return 2
    report = check(rules, exposition)
    findings += report.findings
    if (failed := promtool(args.rules)) is not None:
        findings.append(failed)
    for finding in findings:
        print(f"{finding.rule}: {finding.problem}")
    for name in sorted(report.without_samples):
        print(f"note: {name} is declared but has no series yet")
    verdict = "FAILED" if findings else "ok"
    print(f"{verdict}: {report.rules} rules, {len(report.names)} metric names checked")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
