"""Which metric names a PromQL expression selects, read by a real PromQL parser.

``promql-parser`` (Python bindings of GreptimeTeam's Rust parser, which follows
Prometheus 2.45's grammar) builds the syntax tree; every vector selector in it names
a metric, by ``name{...}`` or by a ``{__name__="name"}`` matcher. A syntax
error or an unknown function is the parser's own message: promtool would
refuse the same file, and this catches it where promtool is not installed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import promql_parser

from tools.alert_rules.errors import AlertRulesError

# Grafana's interval variables stand where PromQL wants a duration ("[$__rate_interval]").
# The check replaces them by a duration: it asks what is selected, not over how long.
GRAFANA_INTERVAL = re.compile(r"\$(?:__[a-z_]+|\{__[a-z_]+\})")


@dataclass(frozen=True)
class Expression:
    """What one PromQL expression selects.

    ``metrics``: the names, in order of first use. ``patterns``: selectors that
    match names by a regex (``{__name__=~"x_.*"}``), which no exposition can confirm.
    """

    metrics: tuple[str, ...]
    patterns: tuple[str, ...] = ()


def referenced_metrics(expr: str) -> Expression:
    """The metric names an expression selects; AlertRulesError when it does not parse."""
    try:
        tree = promql_parser.parse(as_promql(expr))
    except ValueError as error:
        raise AlertRulesError(f"not PromQL: {error}") from error
    metrics: list[str] = []
    patterns: list[str] = []

    def visit(node: promql_parser.Expr) -> None:
        if not isinstance(node, promql_parser.VectorSelector):
            return
        if node.name is not None:
            metrics.append(node.name)
        for matcher in node.matchers.matchers:
            if matcher.name != "__name__":
                continue
            if matcher.op == promql_parser.MatchOp.Equal:
                metrics.append(matcher.value)
            else:
                patterns.append(str(node))

    promql_parser.walk(tree, visit)
    return Expression(tuple(dict.fromkeys(metrics)), tuple(dict.fromkeys(patterns)))


def as_promql(expr: str) -> str:
    """A Grafana panel's query as Prometheus takes it: its interval variables made ``5m``."""
    return GRAFANA_INTERVAL.sub("5m", expr)


def is_duration(text: str) -> bool:
    """A PromQL duration such as ``5m`` or ``1h30m``."""
    try:
        promql_parser.parse_duration(text)
    except ValueError:
        return False
    return True
