"""Prices and credits: what a completion costs, in the workspace's credit unit.

The price table (completions.models.Price) is small and global: each process keeps all of it
in the one TTLCache, reloaded in the background when half its TTL old and cleared at once on
every process when it changes (coherence name "prices"), so the request path makes no
database query. Credits are counted as integer micro-credits (exact sums in Redis):
tokens x dollars per million x credits per dollar is already micro-credits.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal

from asgiref.sync import sync_to_async
from django.db import transaction

from config.common import coherence
from config.common.cache import TTLCache

MICRO = 1_000_000


# What Anthropic bills of the input price for a 5-minute cache write, a 1-hour cache write and
# a cache read (https://docs.anthropic.com/en/docs/about-claude/pricing, "Prompt caching"): a
# table row that leaves those prices blank follows them for models served by Anthropic's API.
ANTHROPIC_CACHE_WRITE = Decimal("1.25")
ANTHROPIC_CACHE_WRITE_1H = Decimal("2")
ANTHROPIC_CACHE_READ = Decimal("0.1")


@dataclass(frozen=True)
class ModelPrice:
    input: Decimal
    cached_input: Decimal
    output: Decimal
    cache_write: Decimal = Decimal(0)
    cache_write_1h: Decimal = Decimal(0)
    # False for a model the table has no row for (lookup's UNPRICED): it costs 0, and a
    # request that a budget applies to is refused (charging.admit) rather than served free.
    listed: bool = True


@dataclass(frozen=True)
class ListedPrice:
    """A row of the table; a blank price is None, its default known once the provider is."""

    input: Decimal
    output: Decimal
    cached_input: Decimal | None = None
    cache_write: Decimal | None = None
    listed: bool = True  # False: no row names the model (UNPRICED)
    # for_provider's answers, by provider (a provider class's name: a handful). Every request
    # asks (charging.admit): made anew, its Decimal products and frozen ModelPrice cost ~17,000
    # instructions (callgrind), a dict read ~100. The row is the table's, replaced with it.
    _charged: dict[str, ModelPrice] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def for_provider(self, provider: str) -> ModelPrice:
        """The prices charged for an answer from `provider`: a blank cached read or cache write
        costs Anthropic's share of the input price for Anthropic, else the input price
        (OpenAI charges no cache writes, and the share of its cache reads varies by model).

        The row's cache-write price is the 5-minute write's: a 1-hour write (Anthropic's) costs
        it times 2 / 1.25, which is 2x the input price for a blank one and keeps a row's own
        price (a discount, or writes priced as input) in proportion."""
        try:
            return self._charged[provider]
        except KeyError:
            price = self._charged[provider] = self._priced(provider)
            return price

    def _priced(self, provider: str) -> ModelPrice:
        anthropic = provider == "anthropic"
        read = ANTHROPIC_CACHE_READ if anthropic else Decimal(1)
        write = ANTHROPIC_CACHE_WRITE if anthropic else Decimal(1)
        cache_write = self.input * write if self.cache_write is None else self.cache_write
        longer = ANTHROPIC_CACHE_WRITE_1H / ANTHROPIC_CACHE_WRITE if anthropic else Decimal(1)
        return ModelPrice(
            input=self.input,
            cached_input=self.input * read if self.cached_input is None else self.cached_input,
            output=self.output,
            cache_write=cache_write,
            cache_write_1h=cache_write * longer,
            listed=self.listed,
        )


FREE = ModelPrice(Decimal(0), Decimal(0), Decimal(0))
UNPRICED = ListedPrice(Decimal(0), Decimal(0), Decimal(0), Decimal(0), listed=False)
_table: TTLCache[str, dict[str, ListedPrice]] = TTLCache(
    ttl=300.0, refresh_after=150.0, max_entries=1
)
coherence.register("prices", _table.clear)


def load_table() -> dict[str, ListedPrice]:
    from django.db import close_old_connections

    from completions.models import Price

    try:
        return {
            p.model: ListedPrice(
                input=p.input_per_million,
                output=p.output_per_million,
                cached_input=p.cached_input_per_million,
                cache_write=p.cache_write_per_million,
            )
            for p in Price.objects.all()
        }
    finally:
        close_old_connections()


_load_async = sync_to_async(load_table, thread_sensitive=False)


# What may follow a priced name in a model's name and still be that model: a snapshot's date
# (OpenAI's "-2024-08-06", "-0125"; Anthropic's "-20241022", Vertex's "@20241022"), "-latest",
# "-preview", a Bedrock revision ("-v1:0"), an Ollama tag (":8b"). Any other tail names another
# model with a price of its own: a bare prefix priced "o1-mini" as "o1" (13x its price),
# "o3-pro" as "o3" (a tenth of it), "claude-opus-4-5" as "claude-opus-4" (3x).
_SNAPSHOT_TAIL = re.compile(
    r"(?:-\d{4}-\d{2}-\d{2}|-\d{8}|-\d{4}|@\d{8}|-latest|-preview|-v\d+(?::\d+)?|:[\w.-]+)+"
)


def lookup(table: dict[str, ListedPrice], model: str) -> ListedPrice:
    """The exact name's price, else the price of the longest name that the model is a snapshot,
    preview or tag of (_SNAPSHOT_TAIL), else UNPRICED (free, and refused where a budget
    applies: charging.admit)."""
    price = table.get(model)
    if price is not None:
        return price
    best = ""
    for name in table:
        if (
            len(name) > len(best)
            and model.startswith(name)
            and _SNAPSHOT_TAIL.fullmatch(model, len(name))
        ):
            best = name
    return table[best] if best else UNPRICED


async def price_async(model: str, *, provider: str) -> ModelPrice:
    return lookup(await _table.aget("all", _load_async), model).for_provider(provider)


def price_sync(model: str, *, provider: str) -> ModelPrice:
    return lookup(_table.get("all", load_table), model).for_provider(provider)


def micro_credits(
    price: ModelPrice,
    *,
    prompt: int,
    completion: int,
    cached: int = 0,
    cache_write: int = 0,
    cache_write_1h: int = 0,
    per_usd: Decimal,
) -> int:
    """What `prompt` (of which `cached` read from the upstream's cache and `cache_write`
    written to it, `cache_write_1h` of those for an hour) and `completion` tokens cost, in
    micro-credits."""
    if cached <= 0 and cache_write <= 0 and prompt >= 0:
        # Most answers, with nothing cached: the two products only. The clamps and the three
        # cache products cost ~8,500 instructions (callgrind), each request.
        usd_micro = prompt * price.input + completion * price.output
        return int((usd_micro * per_usd).to_integral_value(rounding=ROUND_HALF_UP))
    cached = min(max(cached, 0), prompt)
    cache_write = min(max(cache_write, 0), prompt - cached)
    cache_write_1h = min(max(cache_write_1h, 0), cache_write)
    usd_micro = (
        (prompt - cached - cache_write) * price.input
        + cached * price.cached_input
        + (cache_write - cache_write_1h) * price.cache_write
        + cache_write_1h * price.cache_write_1h
        + completion * price.output
    )
    return int((usd_micro * per_usd).to_integral_value(rounding=ROUND_HALF_UP))


def as_credits(micro: int) -> float:
    return micro / MICRO


def prices_changed() -> None:
    """The table changed (admin): every process reloads it on its next request."""
    _table.clear()
    transaction.on_commit(_table.clear)
    coherence.publish("prices")
