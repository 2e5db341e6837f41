"""``STRIPEMETER_CONFIG_FILE``: the config file ``serve`` applies before it takes requests.

``serve`` reads and checks the file before it starts anything (a refused
file: one line naming the place, exit 1). It is applied by the process that
owns the Stripe gateways: the API process with the embedded worker (the
built-in emulator is up by then), else ``serve`` itself before its API
processes start. A change the domain refuses stops the start the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from adapters.persistence import Stores, open_stores
from adapters.push_worker import build_gateways, builtin_emulator_url
from adapters.settings import Settings
from api.config_file import ConfigFile, read_config
from api.config_plan import mapping_service_for, run_config
from domain.errors import StripeMeterError
from domain.pushing import Target
from domain.stripe_port import StripeGateway

log = logging.getLogger("stripemeter")


def check_before_serving(settings: Settings) -> None:
    """Refuse to start on a bad file; with no embedded worker, apply it here."""
    if settings.config_file is None:
        return
    config = read_config(settings.config_file)
    if config.tenant.slug is None:  # serve has no --tenant: the file must name its tenant
        raise config.refusal(
            "tenant.slug",
            "is required (STRIPEMETER_CONFIG_FILE applies the file to the tenant it names)",
        )
    if settings.embedded_worker:
        return  # applied by the API process, once its gateways exist (apply_at_start)
    stores = open_stores(settings)
    try:
        _apply(stores, config, lambda: build_gateways(settings, builtin_emulator_url(settings)))
    finally:
        stores.close()


def apply_at_start(
    settings: Settings, stores: Stores, gateways: dict[Target, StripeGateway]
) -> None:
    """In the API process with the embedded worker: apply the file before serving.

    A refusal is logged as one line before it stops the start (the server
    then logs its own traceback and exits with status 3).
    """
    if settings.config_file is None or not settings.embedded_worker:
        return
    try:
        _apply(stores, read_config(settings.config_file), lambda: gateways)
    except StripeMeterError as error:
        log.error("STRIPEMETER_CONFIG_FILE refused, not starting: %s", error)
        raise


def _apply(
    stores: Stores, config: ConfigFile, gateways: Callable[[], dict[Target, StripeGateway]]
) -> None:
    run_config(
        stores.app,
        config,
        None,
        mapping_service_for(stores, gateways),
        lambda line: log.info("STRIPEMETER_CONFIG_FILE: %s", line.strip()),
    )
