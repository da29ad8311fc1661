"""Prices and credits: what a completion costs, in the workspace's credit unit.

The price table (completions.models.Price) is small and global: each process keeps all of it
in the one TTLCache, reloaded in the background when half its TTL old and cleared at once on
every process when it changes (coherence name "prices"), so the request path makes no
database query. Credits are counted as integer micro-credits (exact sums in Redis):
tokens x dollars per million x credits per dollar is already micro-credits.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from asgiref.sync import sync_to_async
from django.db import transaction

from config.common import coherence
from config.common.cache import TTLCache

MICRO = 1_000_000


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal
    cached_input: Decimal
    output: Decimal


FREE = ModelPrice(Decimal(0), Decimal(0), Decimal(0))
_table: TTLCache[str, dict[str, ModelPrice]] = TTLCache(
    ttl=300.0, refresh_after=150.0, max_entries=1
)
coherence.register("prices", _table.clear)


def load_table() -> dict[str, ModelPrice]:
    from django.db import close_old_connections

    from completions.models import Price

    try:
        return {
            p.model: ModelPrice(
                input=p.input_per_million,
                cached_input=(
                    p.input_per_million
                    if p.cached_input_per_million is None
                    else p.cached_input_per_million
                ),
                output=p.output_per_million,
            )
            for p in Price.objects.all()
        }
    finally:
        close_old_connections()


_load_async = sync_to_async(load_table, thread_sensitive=False)


def lookup(table: dict[str, ModelPrice], model: str) -> ModelPrice:
    """The exact name's price, else its longest priced prefix's, else free."""
    price = table.get(model)
    if price is not None:
        return price
    best = ""
    for name in table:
        if model.startswith(name) and len(name) > len(best):
            best = name
    return table[best] if best else FREE


async def price_async(model: str) -> ModelPrice:
    return lookup(await _table.aget("all", _load_async), model)


def price_sync(model: str) -> ModelPrice:
    return lookup(_table.get("all", load_table), model)


def micro_credits(
    price: ModelPrice, *, prompt: int, completion: int, cached: int = 0, per_usd: Decimal
) -> int:
    """What `prompt` (of which `cached`) and `completion` tokens cost, in micro-credits."""
    cached = min(max(cached, 0), prompt)
    usd_micro = (
        (prompt - cached) * price.input + cached * price.cached_input + completion * price.output
    )
    return int((usd_micro * per_usd).to_integral_value(rounding=ROUND_HALF_UP))


def as_credits(micro: int) -> float:
    return micro / MICRO


def prices_changed() -> None:
    """The table changed (admin): every process reloads it on its next request."""
    _table.clear()
    transaction.on_commit(_table.clear)
    coherence.publish("prices")
