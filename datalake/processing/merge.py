"""How partial results add up: anything with ``+`` (``hist`` histograms, numpy arrays, numbers, Counters), and
dicts of those merged key by key (keys missing on one side are taken as they are)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any


def merge(*results: Any) -> Any:
    """``a + b + ...``, recursing into dicts; ``None`` is the empty result (a chunk with nothing to add)."""
    return functools.reduce(_pair, results, None)


def _pair(a: Any, b: Any) -> Any:
    if a is None:
        return b
    if b is None:
        return a
    if isinstance(a, Mapping) and isinstance(b, Mapping) and not hasattr(a, "__add__"):
        out = dict(a)
        for key, value in b.items():
            out[key] = _pair(out[key], value) if key in out else value
        return out
    try:
        return a + b
    except (TypeError, ValueError) as err:  # e.g. histograms with different axes
        raise TypeError(f"results do not add up: {type(a).__name__} + {type(b).__name__} ({err})") from None
