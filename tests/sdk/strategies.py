"""Events as a client might build them, for the SDK-against-server property tests."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Any text but lone surrogates (which no JSON encoder of either SDK sends).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=8)
names = st.text(st.characters(exclude_categories=("Cs", "Cc")), min_size=1, max_size=12)
decimal_texts = st.decimals(min_value=-(10**9), max_value=10**9, places=6, allow_nan=False)
QUANTITY_TEXTS = ["1e3", "2.50", "0.000000000001", "-0", "1E+2", "0.10"]


def metas(largest_int: int) -> st.SearchStrategy[dict[str, Any]]:
    """meta objects: nested lists and objects of text, floats, booleans, null and ints."""
    scalars = st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-largest_int, max_value=largest_int),
        st.floats(allow_nan=False, allow_infinity=False),
        text,
    )
    values = st.recursive(
        scalars, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner)
    )
    return st.dictionaries(text, values, max_size=5)


def quantities(*extra: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Whole numbers, decimal text, floats and JSON number spellings within the limits."""
    return st.one_of(
        st.integers(min_value=-(10**15) + 1, max_value=10**15 - 1),
        decimal_texts.map(str),
        st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
        st.sampled_from(QUANTITY_TEXTS),
        *extra,
    )
