"""Fit retrieved chunks into a prompt's token budget, dropping the lowest-ranked first."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Fitted(Generic[T]):
    """What fits: the kept items (rank order), how many were dropped or truncated, and whether it fits."""

    kept: list[T]
    dropped: int
    truncated: int
    tokens: int
    fits: bool


def fit_chunks(
    items: Sequence[T],
    budget_tokens: int,
    cost: Callable[[T], int],
    min_items: int,
    truncate: Callable[[T, int], T] | None = None,
) -> Fitted[T]:
    """Keep the best-ranked items whose costs sum within `budget_tokens`.

    `items` come best first. The lowest-ranked are dropped until the rest fit or only `min_items`
    remain; if the minimum still does not fit, `truncate(item, tokens)` shortens each kept item to its
    share of the budget and `fits` is False (the router may prefer a provider with a larger window).
    """
    costs = [cost(item) for item in items]
    keep = len(items)
    total = sum(costs)
    floor = min(max(min_items, 0), len(items))
    while keep > floor and total > budget_tokens:
        keep -= 1
        total -= costs[keep]
    kept = list(items[:keep])
    dropped = len(items) - keep
    if total <= budget_tokens:
        return Fitted(kept, dropped, 0, total, True)
    if truncate is None or not kept or budget_tokens <= 0:
        return Fitted(kept, dropped, 0, total, False)
    share = max(budget_tokens // len(kept), 1)
    shortened = []
    truncated = 0
    for item, item_cost in zip(kept, costs[:keep], strict=True):
        if item_cost > share:
            shortened.append(truncate(item, share))
            truncated += 1
        else:
            shortened.append(item)
    return Fitted(shortened, dropped, truncated, sum(cost(i) for i in shortened), False)
