"""The declarative config file (TOML): what a tenant declares, read and checked as a whole.

``read_config`` parses the file and checks every table, key and value before
anything is compared with what is stored (api/config_plan.py does that). A
refusal is a ``ConfigError`` that names the file, the table and the key, as
``stripemeter.toml: metrics.api_calls.aggregation: must be one of sum, …``;
the reasons are the domain's own (``MetricDefinition``, ``check_spec``, the
tenant's rules), with the API's field name replaced by the file's key.

Every key is described in docs/config-file.md; examples/stripemeter.toml
uses most of them (that page names the others).
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from domain import fields
from domain.alerts import AlertSpec, check_spec
from domain.errors import InvalidInputError, StripeMeterError
from domain.mappings import PUSH_MODE, PushMode
from domain.meters import DEFAULT_LATENESS_SECONDS, MetricDefinition, parse_aggregation
from domain.tenancy import Tenant

TABLE_NAME = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
DEFAULT_COOLDOWN_SECONDS = 3600  # as POST /v1/alerts


class ConfigError(StripeMeterError):
    """The file cannot be applied: where (file, table, key) and why."""


@dataclass(frozen=True)
class TenantConfig:
    slug: str | None
    name: str | None
    late_policy: str | None  # None: left as it is
    ingest_horizon_days: int | None  # None: left as it is


@dataclass(frozen=True)
class MappingConfig:
    metric: str
    stripe_event_name: str | None
    stripe_meter_id: str | None
    create_meter: bool
    shadow_event_name: str | None
    push: str | None = None  # a check: refused unless it is the metric's (push_refusal)


@dataclass(frozen=True)
class AlertConfig:
    """An alert named in the file; its fields checked by ``check_spec`` once its metric's
    aggregation is known (the plan: the metric may be declared in the same file)."""

    name: str
    metric: str
    customer_ref: str | None
    kind: str
    threshold: Decimal
    basis: str | None
    currency: str | None
    enabled: bool
    cooldown_seconds: int

    def spec(self, definition: MetricDefinition) -> AlertSpec:
        return check_spec(
            metric=self.metric,
            customer_ref=self.customer_ref,
            kind=self.kind,
            threshold=self.threshold,
            basis=self.basis,
            currency=self.currency,
            enabled=self.enabled,
            cooldown_seconds=self.cooldown_seconds,
            aggregation=definition.aggregation,
        )


@dataclass(frozen=True)
class ConfigFile:
    path: str
    tenant: TenantConfig
    metrics: tuple[MetricDefinition, ...]
    mappings: tuple[MappingConfig, ...]
    alerts: tuple[AlertConfig, ...]

    def refusal(self, place: str, reason: str) -> ConfigError:
        return ConfigError(f"{self.path}: {place}: {reason}")


# -- reading ---------------------------------------------------------------------

_TOP = {"tenant", "metrics", "mappings", "alerts"}
_TENANT = {"slug": str, "name": str, "late_policy": str, "ingest_horizon_days": int}
_METRIC = {
    "aggregation": str,
    "unit": str,
    "lateness_window_seconds": int,
    "stripe_event_name": str,
    "allow_negative": bool,
}
_MAPPING = {
    "stripe_event_name": str,
    "stripe_meter_id": str,
    "create_meter": bool,
    "shadow_event_name": str,
    "push": str,
}
_ALERT = {
    "metric": str,
    "customer_ref": str,
    "kind": str,
    "threshold": (int, float, str),
    "basis": str,
    "currency": str,
    "enabled": bool,
    "cooldown_seconds": int,
}
# The API's field names in the domain's reasons, as the file's keys.
_KEYS = {
    "latenessWindowSeconds": "lateness_window_seconds",
    "stripeEventName": "stripe_event_name",
    "shadowEventName": "shadow_event_name",
    "stripeMeterId": "stripe_meter_id",
    "stripeMeter": "stripe_event_name",  # the meter the mapping names (a formula refused)
    "customerRef": "customer_ref",
    "cooldownSeconds": "cooldown_seconds",
    "policy": "late_policy",
    "days": "ingest_horizon_days",
    "slug": "slug",
}


def file_key(api_field: str) -> str:
    """The file's key for a field the domain names as the API does."""
    return _KEYS.get(api_field, api_field)


def read_config(path: Path) -> ConfigFile:
    """The file, parsed and checked; a ``ConfigError`` naming the first place it refuses."""
    shown = str(path)
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"{shown}: cannot be read: {error.strerror or error}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{shown}: is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{shown}: not valid TOML: {error}") from None
    return parse_config(raw, shown)


def parse_config(raw: Mapping[str, Any], shown: str) -> ConfigFile:
    def refuse(place: str, reason: str) -> ConfigError:
        return ConfigError(f"{shown}: {place}: {reason}")

    for key in raw:
        if key not in _TOP:
            raise refuse(key, f"unknown table (expected one of {', '.join(sorted(_TOP))})")
    tenant_table = _table(raw, "tenant", refuse)
    _keys(tenant_table, "tenant", _TENANT, refuse)
    tenant = TenantConfig(
        slug=tenant_table.get("slug"),
        name=tenant_table.get("name"),
        late_policy=tenant_table.get("late_policy"),
        ingest_horizon_days=tenant_table.get("ingest_horizon_days"),
    )
    _check_tenant(tenant, refuse)
    metrics = tuple(
        _metric(name, table, refuse) for name, table in _named(raw, "metrics", _METRIC, refuse)
    )
    by_name = {m.name: m for m in metrics}
    mappings = tuple(
        _mapping(name, table, by_name, refuse)
        for name, table in _named(raw, "mappings", _MAPPING, refuse)
    )
    _check_distinct_meters(mappings, by_name, refuse)
    alerts = tuple(
        _alert(name, table, by_name, refuse)
        for name, table in _named(raw, "alerts", _ALERT, refuse)
    )
    return ConfigFile(shown, tenant, metrics, mappings, alerts)


Refuse = Callable[[str, str], ConfigError]


def _table(raw: Mapping[str, Any], name: str, refuse: Refuse) -> Mapping[str, Any]:
    table = raw.get(name, {})
    if not isinstance(table, dict):
        raise refuse(name, "must be a table ([" + name + "])")
    return table


def _named(
    raw: Mapping[str, Any], section: str, keys: Mapping[str, Any], refuse: Refuse
) -> list[tuple[str, Mapping[str, Any]]]:
    """The ``[section.NAME]`` tables, in file order, their keys checked."""
    found: list[tuple[str, Mapping[str, Any]]] = []
    for name, table in _table(raw, section, refuse).items():
        place = f"{section}.{name}"
        if not isinstance(table, dict):
            raise refuse(place, f"must be a table ([{place}])")
        if not TABLE_NAME.match(name):
            raise refuse(place, "the name must be 1 to 64 characters of A-Z, a-z, 0-9, _.:-")
        _keys(table, place, keys, refuse)
        found.append((name, table))
    return found


def _keys(table: Mapping[str, Any], place: str, keys: Mapping[str, Any], refuse: Refuse) -> None:
    for key, value in table.items():
        if key not in keys:
            raise refuse(f"{place}.{key}", f"unknown key (expected one of {', '.join(keys)})")
        expected = keys[key]
        # bool is an int in Python; TOML keeps them apart, and so does this check.
        wrong_bool = isinstance(value, bool) and expected is not bool
        if wrong_bool or not isinstance(value, expected):
            raise refuse(f"{place}.{key}", f"must be {_type_name(expected)}")


def _type_name(expected: Any) -> str:
    if expected is str:
        return "a string"
    if expected is int:
        return "an integer"
    if expected is bool:
        return "true or false"
    return "a number (or a string holding one)"


def _domain(place: str, refuse: Refuse, check: Callable[[], Any]) -> Any:
    """Run a domain check; its refusal named at ``place`` and the file's key."""
    try:
        return check()
    except InvalidInputError as error:
        raise refuse(f"{place}.{file_key(error.field)}", error.reason) from None


def _check_tenant(tenant: TenantConfig, refuse: Refuse) -> None:
    """The tenant's own rules, run on a throwaway tenant (never saved)."""
    slug = tenant.slug or "config-check"
    try:
        name = tenant.name if tenant.name is not None else slug
        throwaway = Tenant.register(slug, name)
        if tenant.late_policy is not None:
            throwaway.set_late_policy(tenant.late_policy)
        if tenant.ingest_horizon_days is not None:
            throwaway.set_ingest_horizon(tenant.ingest_horizon_days)
    except InvalidInputError as error:
        raise refuse(f"tenant.{file_key(error.field)}", error.reason) from None


def _metric(name: str, table: Mapping[str, Any], refuse: Refuse) -> MetricDefinition:
    place = f"metrics.{name}"
    if "aggregation" not in table:
        raise refuse(f"{place}.aggregation", "is required (sum, count, max or last)")

    def build() -> MetricDefinition:
        return MetricDefinition(
            name=name,
            aggregation=parse_aggregation(table["aggregation"]),
            unit=table.get("unit", "unit"),
            lateness_seconds=table.get("lateness_window_seconds", DEFAULT_LATENESS_SECONDS),
            stripe_event_name=table.get("stripe_event_name"),
            allow_negative=table.get("allow_negative", False),
        )

    try:
        return build()
    except InvalidInputError as error:
        # The metric's name is the table's own: a refused name is the table's refusal.
        where = place if error.field == "name" else f"{place}.{file_key(error.field)}"
        raise refuse(where, error.reason) from None


def _mapping(
    metric: str,
    table: Mapping[str, Any],
    metrics: Mapping[str, MetricDefinition],
    refuse: Refuse,
) -> MappingConfig:
    place = f"mappings.{metric}"
    _domain(place, refuse, lambda: fields.metric(metric))
    for key in ("stripe_event_name", "shadow_event_name"):
        if key in table:
            _event_name(f"{place}.{key}", table[key], refuse)
    push = table.get("push")
    if push is not None:
        modes = ", ".join(m.value for m in PushMode)
        if push not in {m.value for m in PushMode}:
            raise refuse(f"{place}.push", f"must be one of {modes}")
        definition = metrics.get(metric)
        # A metric stored before the file is checked by the plan, which reads it.
        reason = push_refusal(push, definition) if definition is not None else None
        if reason is not None:
            raise refuse(f"{place}.push", reason)
    return MappingConfig(
        metric=metric,
        stripe_event_name=table.get("stripe_event_name"),
        stripe_meter_id=table.get("stripe_meter_id"),
        create_meter=table.get("create_meter", False),
        shadow_event_name=table.get("shadow_event_name"),
        push=push,
    )


def push_refusal(push: str | None, definition: MetricDefinition) -> str | None:
    """Why a mapping's ``push`` is not the one ``definition``'s aggregation has, or None."""
    needed = PUSH_MODE[definition.aggregation].value
    if push is None or push == needed:
        return None
    return (
        f"a {definition.aggregation.value!r} metric is pushed as {needed!r}"
        " (the push follows the metric's aggregation: domain/mappings.py)"
    )


def _event_name(place: str, value: str, refuse: Refuse) -> None:
    try:
        fields.stripe_event_name(value)
    except InvalidInputError as error:
        raise refuse(place, error.reason) from None


def planned_event_name(mapping: MappingConfig, definition: MetricDefinition | None) -> str:
    """The Stripe event name a mapping asks for, as ``map_meter`` chooses it."""
    if mapping.stripe_event_name is not None:
        return mapping.stripe_event_name
    if definition is not None and definition.stripe_event_name is not None:
        return definition.stripe_event_name
    return mapping.metric


def _check_distinct_meters(
    mappings: tuple[MappingConfig, ...], metrics: Mapping[str, MetricDefinition], refuse: Refuse
) -> None:
    """Two metrics of the file on one Stripe meter would count each other's usage.

    A mapping by ``stripe_meter_id`` is on a meter whose event name only Stripe
    knows: the plan checks those, with the meter found (api/config_plan.py).
    """
    seen: dict[str, str] = {}
    for mapping in mappings:
        if mapping.stripe_meter_id is not None:
            continue
        name = planned_event_name(mapping, metrics.get(mapping.metric))
        if name in seen:
            raise refuse(
                f"mappings.{mapping.metric}",
                f"Stripe meter {name!r} is already mapped by mappings.{seen[name]}",
            )
        seen[name] = mapping.metric


def _alert(
    name: str,
    table: Mapping[str, Any],
    metrics: Mapping[str, MetricDefinition],
    refuse: Refuse,
) -> AlertConfig:
    place = f"alerts.{name}"
    for key in ("metric", "kind", "threshold"):
        if key not in table:
            raise refuse(f"{place}.{key}", "is required")
    threshold = table["threshold"]
    try:
        value = Decimal(str(threshold))
    except InvalidOperation:
        raise refuse(f"{place}.threshold", "must be a number (or a string holding one)") from None
    alert = AlertConfig(
        name=name,
        metric=table["metric"],
        customer_ref=table.get("customer_ref"),
        kind=table["kind"],
        threshold=value,
        basis=table.get("basis"),
        currency=table.get("currency"),
        enabled=table.get("enabled", True),
        cooldown_seconds=table.get("cooldown_seconds", DEFAULT_COOLDOWN_SECONDS),
    )
    definition = metrics.get(alert.metric)
    if definition is not None:  # else checked against the stored metric by the plan
        _domain(place, refuse, lambda: alert.spec(definition))
    return alert
