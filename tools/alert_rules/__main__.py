"""``python -m tools.alert_rules``, as ``scripts/check-alerts`` runs it."""

import sys

from tools.alert_rules.command import main

sys.exit(main())
