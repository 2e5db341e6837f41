"""The one error of the checker."""


class AlertRulesError(Exception):
    """A rules file or an exposition that cannot be read at all."""
