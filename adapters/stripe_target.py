"""Whether a process that pushes may start with the Stripe it is configured for.

With no ``STRIPE_SECRET_KEY``, pushes go to the built-in Stripe emulator
(``push_worker.start_builtin_emulator``): right for the embedded default
(SQLite, ``scripts/run``), where it is the quick start, and wrong for a
production deployment (PostgreSQL) whose operator forgot the key — its
counters would look pushed while Stripe never hears of them. There, the
emulator is used only when ``STRIPEMETER_STRIPE_EMULATOR=true`` asks for it.
"""

from __future__ import annotations

from adapters.settings import Settings, SettingsError


class MissingStripeKeyError(SettingsError):
    """A production process would push to the built-in emulator without being asked to."""


def check_stripe_target(settings: Settings, *, pushes: bool) -> None:
    """Refuse to start a pushing process on PostgreSQL that has neither a key nor the opt-in."""
    if pushes:
        _refuse_unasked_emulator(settings, "nothing pushes to the built-in Stripe emulator")


def check_stripe_command(settings: Settings) -> None:
    """Refuse a command that reads or writes Stripe (reconcile, config apply, customer and
    meter mappings, ownership) on PostgreSQL with neither a key nor the opt-in: its answers
    would be the emulator's, not Stripe's."""
    _refuse_unasked_emulator(
        settings, "no command reads or writes the built-in Stripe emulator instead of Stripe"
    )


def _refuse_unasked_emulator(settings: Settings, what: str) -> None:
    stripe = settings.stripe
    if stripe.secret_key or stripe.emulator or settings.postgres is None:
        return
    raise MissingStripeKeyError(
        f"STRIPE_SECRET_KEY is not set: on PostgreSQL {what} unless asked; set"
        " STRIPE_SECRET_KEY, or STRIPEMETER_STRIPE_EMULATOR=true to use the emulator on purpose"
    )
