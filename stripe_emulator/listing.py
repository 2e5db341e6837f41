"""Stripe's list envelope and cursor pagination (newest first)."""

from __future__ import annotations

from collections.abc import Iterable

from stripe_emulator.errors import invalid_request
from stripe_emulator.params import Params, opt_int, opt_str
from stripe_emulator.state import Obj


def page(items: Iterable[Obj], params: Params, url: str) -> Obj:
    """One page of ``items`` (already in list order) honouring limit and cursors."""
    ordered = list(items)
    limit = opt_int(params, "limit") or 10
    if not 1 <= limit <= 100:
        raise invalid_request("Limit must be between 1 and 100.", param="limit")
    after, before = opt_str(params, "starting_after"), opt_str(params, "ending_before")
    ids = [item["id"] for item in ordered]
    if after is not None:
        if after not in ids:
            raise invalid_request(f"No such object: '{after}'", param="starting_after")
        ordered = ordered[ids.index(after) + 1 :]
        window = ordered[:limit]
    elif before is not None:
        if before not in ids:
            raise invalid_request(f"No such object: '{before}'", param="ending_before")
        ordered = ordered[: ids.index(before)]
        window = ordered[-limit:]
    else:
        window = ordered[:limit]
    return {"object": "list", "data": window, "has_more": len(ordered) > limit, "url": url}


def newest_first(objects: Iterable[Obj]) -> list[Obj]:
    """Insertion order reversed: dicts keep creation order, Stripe lists newest first."""
    return list(reversed(list(objects)))
