"""Reconciliation reports as ``/v1/reconciliation`` and ``stripemeter reconcile`` show them."""

from __future__ import annotations

import csv
from typing import TextIO

from adapters.reconciliation_reports import Report, ReportLine
from api.queries.usage import when
from api.schemas import ReconciliationLineOut, ReconciliationOut
from domain.periods import month_from_key

CSV_COLUMNS = list(ReconciliationLineOut.__struct_fields__)
CSV_HEADER = ["runId", *ReconciliationLineOut.__struct_encode_fields__]  # as in the JSON


def month_of(field: str, value: str) -> str:
    """A month of period starts (``YYYY-MM``), as reconciliation reports are kept by."""
    return month_from_key(value, field).key


def report_out(report: Report) -> ReconciliationOut:
    return ReconciliationOut(
        run_id=report.run_id,
        month=report.month,
        started_at=when(report.started_at) or "",
        finished_at=when(report.finished_at) or "",
        trigger=report.trigger,
        actor=report.actor,
        repair=report.repair,
        stripe_calls=report.stripe_calls,
        counts=_counts(report),
        lines=[_line_out(line) for line in report.lines],
    )


def _counts(report: Report) -> dict[str, int]:
    """Lines by status; ``skipped`` only when some shadow line was, so that a report
    without one keeps exactly the keys it always had."""
    counts = {s: report.count(s) for s in ("ok", "pending", "drift", "repaired")}
    if skipped := report.count("skipped"):
        counts["skipped"] = skipped
    return counts


def _line_out(line: ReportLine) -> ReconciliationLineOut:
    return ReconciliationLineOut(
        customer_ref=line.customer_ref,
        metric=line.metric,
        period=line.period,
        period_start=when(line.period_start) or "",
        period_end=when(line.period_end) or "",
        stripe_customer_id=line.stripe_customer_id,
        meter_id=line.meter_id,
        local=line.local,
        stripe=line.stripe,
        expected=line.expected,
        difference=line.difference,
        status=line.status,
        cause=line.cause,
        closed=line.closed,
        verdict=line.verdict,
        target="shadow" if line.target == "shadow" else "live",
    )


def write_csv(reports: list[ReconciliationOut], out: TextIO) -> None:
    """Report lines as CSV, with the JSON's column names and the run id first."""
    writer = csv.writer(out)
    writer.writerow(CSV_HEADER)
    for report in reports:
        for line in report.lines:
            writer.writerow([report.run_id, *(getattr(line, f) for f in CSV_COLUMNS)])
