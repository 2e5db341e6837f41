"""``stripemeter demo parity``: one billing cycle, end to end, against the Stripe emulator.

Nothing is simulated. The Stripe emulator (a real HTTP server, driven by the
official SDK) runs in this process with a test clock; the StripeMeter API
runs beside it under uvicorn on a free port, with SQLite in a temporary
folder and the embedded worker on (projections, pushes, period closing and
parity, as ``stripemeter serve`` runs them). StripeMeter lives in the test
clock's time. Usage goes in over HTTP with an API key, Stripe's invoice
webhooks come back signed to ``POST /v1/stripe/webhooks``, and the verdict
is the one StripeMeter recorded (``ParityRecorded``) set beside the quantity
on Stripe's finalised invoice.

The cycle, on the clock: usage mid-period (one event retried: a duplicate)
and an operator credit; the period ends and Stripe drafts the invoice; a late
event stamped before the end is still counted; StripeMeter closes the period
shortly before the invoice finalises; an event arriving after that is carried
into the next period; the invoice finalises. ``--drift`` also sends a meter
event to Stripe behind StripeMeter's back, to show a mismatch and its cause.

Exit 0 on parity, 1 on a mismatch, 2 when the demo cannot set up or finish.
"""
