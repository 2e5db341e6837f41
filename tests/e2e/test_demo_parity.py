"""``stripemeter demo parity``, run as a user runs it: the real API, worker and emulator.

One billing cycle on a test clock: usage with a retried (duplicate) event, an
operator credit, a late event counted during the invoice's grace period, an
event after the close carried into the next period, and the invoice
finalised. The demo's verdict is StripeMeter's recorded parity beside the
quantity on Stripe's invoice.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from api.cli import main

OUTSIDE = "events sent to Stripe outside StripeMeter"


def run_demo(capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, dict[str, Any]]:
    code = main(["demo", "parity", "--json", *flags])
    captured = capsys.readouterr()
    assert captured.out.strip(), captured.err
    result: dict[str, Any] = json.loads(captured.out)
    return code, result


def test_one_cycle_ends_in_parity_after_a_duplicate_a_credit_a_late_and_a_carried_event(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, result = run_demo(capsys)

    assert (code, result["verdict"], result["result"]) == (0, "parity", "PARITY")
    # 120 + 80 (req-1 retried: counted once) - 15 credit + 30 late; req-4 missed the close.
    assert result["localTotal"] == result["invoice"]["quantity"] == 215
    assert result["invoice"]["status"] == "open" and result["invoice"]["total"] == 430
    assert result["recorded"] == {
        "verdict": "parity",
        "localUnits": 215,
        "stripeTotal": 215,
        "invoiceId": result["invoice"]["id"],
        "invoiceQuantity": 215,
    }
    assert [(e["idempotencyKey"], e["status"], e["late"]) for e in result["events"]] == [
        ("req-1", "accepted", None),
        ("req-2", "accepted", None),
        ("req-1", "duplicate", None),
        ("req-3", "accepted", "in_window"),
        ("req-4", "accepted", "carried"),
    ]
    assert result["correction"]["quantity"] == "-15"
    assert result["correction"]["status"] == "applied"
    assert result["correction"]["appliedTo"] == result["period"]["key"] == "2026-01-01T00:00:00Z"
    assert result["carried"] == {
        "idempotencyKey": "req-4",
        "quantity": 12,
        "period": "2026-02-01T00:00:00Z",
        "stripeConfirmed": 12,
    }
    assert result["reconciliation"]["status"] == "ok"
    assert result["drift"] is None


def test_usage_sent_to_stripe_behind_stripemeters_back_is_a_mismatch_with_its_cause(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, result = run_demo(capsys, "--drift")

    assert (code, result["verdict"], result["result"]) == (1, "mismatch", "MISMATCH")
    assert result["localTotal"] == 215
    assert result["invoice"]["quantity"] == 222  # the 7 sent outside StripeMeter
    assert result["recorded"]["verdict"] == "mismatch"
    assert (result["recorded"]["stripeTotal"], result["recorded"]["invoiceQuantity"]) == (222, 222)
    assert result["reconciliation"] == {
        "status": "drift",
        "cause": OUTSIDE,
        "local": 215,
        "stripe": 222,
    }
    assert result["drift"]["value"] == 7
