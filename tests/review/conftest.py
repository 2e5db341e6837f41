"""The e2e and integration fixtures, for the review's tests beside them."""

from tests.e2e.conftest import api, stripe_api, webhook_api
from tests.integration.conftest import world

__all__ = ["api", "stripe_api", "webhook_api", "world"]
