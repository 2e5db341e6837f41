"""Tools beside the service: the parity demo and the alert-rules checker.

Not the running service: nothing in ``domain``, ``projections``, ``adapters``
or ``api`` imports them (import-linter checks it), except that ``stripemeter
demo parity`` loads the demo when it runs. They may use what only a developer
installs (``pyyaml``) and the emulator's test helpers.
"""
