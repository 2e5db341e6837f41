"""Which metric names a PromQL expression selects: a tokenizer, not a parser.

It knows strings, comments, label matchers in ``{}``, ranges in ``[]``,
numbers and durations, keywords and the label lists after
``by``/``without``/``on``/``ignoring``/``group_*``, and the names of PromQL's
functions and aggregations. What is left are metric names. An unknown
function name is reported too (promtool would refuse the file; this catches
the typo where promtool is not installed).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from tools.alert_rules.errors import AlertRulesError

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

IDENTIFIER = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_NUMBER = re.compile(
    r"0[xX][0-9a-fA-F]+|(?:[0-9]+(?:ms|[smhdwy]))+|[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?"
)
_LABEL_MATCHER = re.compile(r"\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*")
_OPERATOR = re.compile(r"\s*(=~|!~|!=|=)")
DURATION = re.compile(r"(?:[0-9]+(?:ms|[smhdwy]))+")


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
        elif (word := IDENTIFIER.match(expr, i)) is not None:
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
    word = IDENTIFIER.match(text, i)
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
