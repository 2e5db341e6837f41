"""``GET /v1/account``: each secret key reads as its own account."""

from __future__ import annotations

from typing import Any

from stripe_emulator.account import account_id_for
from stripe_emulator.testing import TEST_API_KEY, RunningEmulator


def test_the_current_account_is_named_after_the_key(client: Any, emu: RunningEmulator) -> None:
    account = client.v1.accounts.retrieve_current()
    assert account.object == "account"
    assert account.id == account_id_for(TEST_API_KEY)
    assert account.id.startswith("acct_") and len(account.id) == 21
    again = emu.client(max_network_retries=0).v1.accounts.retrieve_current()
    assert again.id == account.id
    other = emu.client("sk_test_another", max_network_retries=0).v1.accounts.retrieve_current()
    assert other.id == account_id_for("sk_test_another") != account.id
