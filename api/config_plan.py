"""A config file against what a tenant has: the diff, checked whole, then applied.

``plan`` compares every item of the file (api/config_file.py) with the
tenant as stored, and decides each change on an unsaved copy of the tenant
with the domain's own methods (``declare_metric``, ``set_late_policy``,
``StripeMappingService.check_meter``, ``check_spec``): what the domain would
refuse is refused here, with its message, before anything is saved.

``apply_plan`` then makes each change through the application service the
API uses, in the plan's order (tenant, its settings, metrics, mappings,
alerts), one save each. What can still refuse there is what changed between
the plan and the save (another admin, a push that lands meanwhile, Stripe
unreachable): then the changes before it stay made, ``ApplyError`` says which,
and running the file again finishes the rest (applying is idempotent).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, fields
from typing import Any
from uuid import UUID, uuid5

from eventsourcing.application import AggregateNotFoundError

from adapters.persistence import Stores
from api.config_file import (
    AlertConfig,
    ConfigError,
    ConfigFile,
    MappingConfig,
    file_key,
    push_refusal,
)
from api.config_file import planned_event_name as event_name_of
from domain.alerting import AlertService
from domain.alerts import AlertRule, AlertSpec
from domain.application import MeteringApp
from domain.errors import (
    ConflictError,
    InvalidInputError,
    MetricConflictError,
    NotFoundError,
    StripeMeterError,
)
from domain.mappings import PUSH_MODE
from domain.meters import MetricDefinition
from domain.pushing import Target
from domain.stripe_mapping import StripeMappingService
from domain.stripe_port import StripeError, StripeGateway
from domain.tenancy import Tenant, tenant_id_for

CREATE, UPDATE, UNCHANGED = "create", "update", "unchanged"


@dataclass(frozen=True)
class Step:
    """One item of the file: what happens to it, and how (None when unchanged)."""

    place: str  # "metrics.api_calls"
    action: str  # create, update or unchanged
    detail: str
    make: Callable[[], object] | None = None

    def line(self) -> str:
        return f"  {self.action:<9}  {self.place}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Plan:
    path: str  # the file's, as given: refusals name it
    slug: str
    tenant_id: UUID
    steps: tuple[Step, ...]

    @property
    def changes(self) -> list[Step]:
        return [s for s in self.steps if s.make is not None]

    def summary(self) -> str:
        counts = {a: sum(1 for s in self.steps if s.action == a) for a in (CREATE, UPDATE)}
        unchanged = len(self.steps) - counts[CREATE] - counts[UPDATE]
        return f"{counts[CREATE]} to create, {counts[UPDATE]} to update, {unchanged} unchanged"


class ApplyError(StripeMeterError):
    """A change refused while applying: the ones before it were made."""

    def __init__(
        self, path: str, step: Step, reason: str, made: list[Step], left: list[Step]
    ) -> None:
        done = ", ".join(s.place for s in made) or "none"
        rest = ", ".join(s.place for s in left) or "none"
        super().__init__(
            f"{path}: {step.place}: {reason}. Applied before it: {done}. Not applied: {rest}."
            " Fix the cause and apply the file again: what is applied stays unchanged"
        )


def mapping_service_for(
    stores: Stores, gateways: Callable[[], dict[Target, StripeGateway]]
) -> Callable[[], StripeMappingService]:
    """The mapping service the API builds, made only when a mapping is to change."""

    def build() -> StripeMappingService:
        found = gateways()
        return StripeMappingService(
            stores.app, found[Target.LIVE], found.get(Target.SHADOW), stores.views.ledger
        )

    return build


def alert_id_for(tenant_id: UUID, name: str) -> UUID:
    """The id of the file's ``[alerts.NAME]``: the same alert on every apply."""
    return uuid5(tenant_id, f"config-alert:{name}")


def plan(
    app: MeteringApp,
    config: ConfigFile,
    slug: str | None,
    mapping_service: Callable[[], StripeMappingService],
) -> Plan:
    """Every item of ``config`` against the tenant ``slug`` (default: the file's [tenant].slug).

    ``mapping_service`` is called only when a mapping is to change (it reads Stripe).
    Raises ``ConfigError`` naming the first item the domain refuses; nothing is saved.
    """
    slug = slug or config.tenant.slug
    if slug is None:
        raise ConfigError(f"{config.path}: tenant.slug: is required (or pass --tenant SLUG)")
    planner = _Planner(app, config, slug, mapping_service)
    return Plan(config.path, slug, planner.tenant_id, tuple(planner.steps()))


def apply_plan(plan: Plan) -> list[Step]:
    """Make the plan's changes in order; the steps made. ``ApplyError`` when one is refused."""
    changes = plan.changes
    made: list[Step] = []
    for i, step in enumerate(changes):
        assert step.make is not None
        try:
            step.make()
        except (StripeMeterError, StripeError) as error:
            raise ApplyError(plan.path, step, str(error), made, changes[i + 1 :]) from error
        made.append(step)
    return made


def run_config(
    app: MeteringApp,
    config: ConfigFile,
    slug: str | None,
    mapping_service: Callable[[], StripeMappingService],
    say: Callable[[str], None],
    *,
    dry_run: bool = False,
) -> tuple[Plan, list[Step]]:
    """Plan ``config``, ``say`` the diff line by line, and apply it unless ``dry_run``;
    the plan and the steps applied.

    ``stripemeter config apply`` prints what it says; ``serve`` logs it
    (``STRIPEMETER_CONFIG_FILE``). Raises ``ConfigError`` (nothing applied) or
    ``ApplyError`` (refused midway: it names what was applied).
    """
    the_plan = plan(app, config, slug, mapping_service)
    say(f"{config.path} for tenant {the_plan.slug}:")
    for step in the_plan.steps:
        say(step.line())
    say(the_plan.summary())
    if dry_run:
        say("dry run: nothing changed")
        return the_plan, []
    if not the_plan.changes:
        say("nothing to change")
        return the_plan, []
    made = apply_plan(the_plan)
    say(f"applied {len(made)} changes")
    return the_plan, made


class _Planner:
    def __init__(
        self,
        app: MeteringApp,
        config: ConfigFile,
        slug: str,
        mapping_service: Callable[[], StripeMappingService],
    ) -> None:
        self.app = app
        self.config = config
        self.slug = slug
        self.tenant_id = tenant_id_for(slug)
        self._mapping_service = mapping_service
        self._service: StripeMappingService | None = None
        # The live Stripe meter (by its event name) each mapping of the file ends on.
        self._meters: dict[str, str] = {}

    def refuse(self, place: str, error: Exception) -> ConfigError:
        if isinstance(error, InvalidInputError):
            return self.config.refusal(f"{place}.{file_key(error.field)}", error.reason)
        return self.config.refusal(place, str(error))

    def mapping_service(self) -> StripeMappingService:
        if self._service is None:
            self._service = self._mapping_service()
        return self._service

    def steps(self) -> Iterator[Step]:
        try:
            copy = self.app.fresh_tenant(self.tenant_id)
        except NotFoundError:  # not registered yet
            # The file's name is its own tenant's, not that of another named by --tenant.
            own = self.config.tenant.slug in (None, self.slug)
            name = (self.config.tenant.name if own else None) or self.slug
            try:
                copy = Tenant.register(self.slug, name)
            except InvalidInputError as error:
                raise self.refuse("tenant", error) from None
            yield Step("tenant", CREATE, f"{self.slug} ({name})", lambda: self._register(name))
        yield from self._settings(copy)
        for definition in self.config.metrics:
            yield self._metric(copy, definition)
        for mapping in self.config.mappings:
            yield self._mapping(copy, mapping)
        for alert in self.config.alerts:
            yield self._alert(copy, alert)

    def _settings(self, copy: Tenant) -> Iterator[Step]:
        wanted = self.config.tenant
        if wanted.late_policy is not None:
            policy = wanted.late_policy
            yield _setting(
                "tenant.late_policy",
                copy.late_policy,
                policy,
                copy.set_late_policy(policy),
                lambda: self.app.set_late_policy(self.tenant_id, policy),
            )
        if wanted.ingest_horizon_days is not None:
            days = wanted.ingest_horizon_days
            yield _setting(
                "tenant.ingest_horizon_days",
                copy.ingest_horizon_days,
                days,
                copy.set_ingest_horizon(days),
                lambda: self.app.set_ingest_horizon(self.tenant_id, days),
            )

    def _metric(self, copy: Tenant, definition: MetricDefinition) -> Step:
        place = f"metrics.{definition.name}"
        existing = copy.metrics.get(definition.name)
        try:
            created = copy.declare_metric(definition)
        except MetricConflictError as error:
            assert existing is not None
            raise self.config.refusal(
                place, f"{error} ({_differences(existing, definition, _METRIC_KEYS)})"
            ) from None
        if not created:
            return Step(place, UNCHANGED, _describe_metric(definition))
        return Step(
            place,
            CREATE,
            _describe_metric(definition),
            lambda: self.app.declare_metric(self.tenant_id, definition),
        )

    def _mapping(self, copy: Tenant, wanted: MappingConfig) -> Step:
        place = f"mappings.{wanted.metric}"
        definition = copy.metrics.get(wanted.metric)
        if definition is None:
            raise self.config.refusal(
                place, f"metric {wanted.metric!r} is not declared (declare it in [metrics])"
            )
        refused_push = push_refusal(wanted.push, definition)  # a metric stored before the file
        if refused_push is not None:
            raise self.config.refusal(f"{place}.push", refused_push)
        push = PUSH_MODE[definition.aggregation].value
        event_name = event_name_of(wanted, definition)
        current = copy.mappings.get(wanted.metric)
        # A meter named by id is the same meter whatever its event name (map_meter
        # stores the meter's own, which need not be the metric's name).
        same_meter = current is not None and (
            current.stripe_meter_id == wanted.stripe_meter_id
            if wanted.stripe_meter_id is not None
            else current.stripe_event_name == event_name
        )
        if (
            current is not None
            and same_meter
            and current.shadow_event_name == wanted.shadow_event_name
        ):
            self._one_metric_per_meter(place, current.stripe_event_name, wanted.metric)
            shown = f"Stripe meter {current.stripe_event_name!r} ({current.stripe_meter_id})"
            return Step(place, UNCHANGED, f"{shown}, {push}")
        service = self.mapping_service()
        try:
            checked = service.check_meter(
                copy,
                wanted.metric,
                wanted.stripe_meter_id,
                wanted.stripe_event_name,
                wanted.create_meter,
                wanted.shadow_event_name,
            )
        except (StripeMeterError, StripeError) as error:  # Stripe unreachable: named here too
            raise self.refuse(place, error) from None
        self._one_metric_per_meter(place, checked.event_name, wanted.metric)
        meter = checked.meter
        where = f"{meter.id}" if meter else "created in Stripe"
        detail = f"Stripe meter {checked.event_name!r} ({where}), {push}"
        if current is not None:
            detail = f"Stripe meter {current.stripe_event_name!r} -> {detail}"

        def make() -> object:
            return service.map_meter(
                self.tenant_id,
                wanted.metric,
                stripe_meter_id=wanted.stripe_meter_id,
                stripe_event_name=wanted.stripe_event_name,
                create_meter=wanted.create_meter,
                shadow_event_name=wanted.shadow_event_name,
            )

        return Step(place, CREATE if current is None else UPDATE, detail, make)

    # Two applies of one file may run at once (two `serve` starting with the same
    # STRIPEMETER_CONFIG_FILE): what the other made meanwhile, as the file says, is done.

    def _register(self, name: str) -> object:
        try:
            return self.app.register_tenant(self.slug, name)
        except ConflictError:  # registered meanwhile; the name is used only to create it
            return self.app.fresh_tenant(self.tenant_id)

    def _create_alert(self, service: AlertService, spec: AlertSpec, alert_id: UUID) -> object:
        try:
            return service.create(self.tenant_id, spec, alert_id)
        except ConflictError:
            made = service.rule(self.tenant_id, alert_id)
            if made.spec != spec:
                raise
            return made

    def _one_metric_per_meter(self, place: str, event_name: str, metric: str) -> None:
        """Two mappings of the file on one meter: refused here, before anything is applied.

        ``check_meter`` checks each mapping against what is saved, so the second of
        two mappings to one meter (named by id, which the file's own check cannot
        see) passed the plan and was refused midway, after the first was applied.
        """
        other = self._meters.setdefault(event_name, metric)
        if other != metric:
            raise self.config.refusal(
                place, f"Stripe meter {event_name!r} is already mapped by mappings.{other}"
            )

    def _alert(self, copy: Tenant, wanted: AlertConfig) -> Step:
        place = f"alerts.{wanted.name}"
        definition = copy.metrics.get(wanted.metric)
        if definition is None:
            raise self.config.refusal(
                f"{place}.metric",
                f"{wanted.metric!r} is not declared (declare it in [metrics] or with"
                " POST /v1/meters)",
            )
        try:
            spec = wanted.spec(definition)
        except InvalidInputError as error:
            raise self.refuse(place, error) from None
        alert_id = alert_id_for(self.tenant_id, wanted.name)
        service = AlertService(self.app)
        try:
            rule: Any = self.app.repository.get(alert_id)
        except AggregateNotFoundError:
            return Step(
                place,
                CREATE,
                _describe_alert(spec),
                lambda: self._create_alert(service, spec, alert_id),
            )
        if not isinstance(rule, AlertRule) or rule.deleted:
            raise self.config.refusal(
                place,
                f"alert {alert_id} was deleted through the API; give the alert another name"
                " in the file to create a new one",
            )
        if rule.spec == spec:
            return Step(place, UNCHANGED, _describe_alert(spec))
        return Step(
            place,
            UPDATE,
            _differences(rule.spec, spec, _ALERT_KEYS),
            lambda: service.replace(self.tenant_id, alert_id, spec),
        )


_METRIC_KEYS = {
    "aggregation": "aggregation",
    "unit": "unit",
    "lateness_seconds": "lateness_window_seconds",
    "stripe_event_name": "stripe_event_name",
    "allow_negative": "allow_negative",
}
_ALERT_KEYS = {f.name: f.name for f in fields(AlertSpec)}


def _shown(value: object) -> str:
    return str(getattr(value, "value", value))


def _differences(old: object, new: object, keys: dict[str, str]) -> str:
    """``key old -> new`` for each field that differs, in the file's keys."""
    return ", ".join(
        f"{key} {_shown(getattr(old, attr))} -> {_shown(getattr(new, attr))}"
        for attr, key in keys.items()
        if getattr(old, attr) != getattr(new, attr)
    )


def _describe_metric(d: MetricDefinition) -> str:
    return f"{d.aggregation.value}, unit {d.unit}, lateness window {d.lateness_seconds} s"


def _describe_alert(spec: AlertSpec) -> str:
    who = spec.customer_ref or "every customer"
    state = "" if spec.enabled else ", disabled"
    return f"{spec.kind.value} >= {spec.threshold} on {spec.metric} for {who}{state}"


def _setting(
    place: str, before: object, wanted: object, changed: bool, apply: Callable[[], object]
) -> Step:
    """One tenant setting: an update from ``before`` when the copy changed, else unchanged."""
    if changed:
        return Step(place, UPDATE, f"{before} -> {wanted}", apply)
    return Step(place, UNCHANGED, str(wanted))
