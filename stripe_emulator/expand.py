"""``expand[]`` as Stripe treats it, as far as this emulator's objects need.

Stripe refuses an expansion deeper than four levels ("You cannot expand more
than 4 levels of a property"; on a list call ``data`` is one of them), and
leaves out *includable* fields unless they are expanded: here a price's
``tiers``, which Stripe returns only when asked (``expand[]=tiers`` on the
price, ``data.tiers`` on a price list, ``items.data.price.tiers`` on a
subscription). Other expansions are accepted and change nothing: objects this
emulator nests are already whole.
"""

from __future__ import annotations

from typing import Any

from stripe_emulator.errors import invalid_request

MAX_DEPTH = 4


def expansions(params: Any) -> set[str]:
    """The request's ``expand`` paths; a 400 for one deeper than Stripe allows."""
    raw = params.get("expand") if isinstance(params, dict) else None
    if raw is None:
        return set()
    paths = raw if isinstance(raw, list) else [raw]
    for index, path in enumerate(paths):
        if not isinstance(path, str) or not path:
            raise invalid_request("Invalid expand: must be a property path.", param="expand")
        if len(path.split(".")) > MAX_DEPTH:
            raise invalid_request(
                f"You cannot expand more than {MAX_DEPTH} levels of a property. Property: {path}",
                param=f"expand[{index}]",
            )
    return set(paths)


def shaped(body: Any, expand: set[str], path: str = "") -> Any:
    """A copy of ``body`` with each price's ``tiers`` left out unless expanded there."""
    if isinstance(body, list):
        return [shaped(item, expand, path) for item in body]
    if not isinstance(body, dict):
        return body
    out = {key: shaped(value, expand, f"{path}{key}.") for key, value in body.items()}
    if body.get("object") == "price" and f"{path}tiers" not in expand:
        out.pop("tiers", None)
    return out
