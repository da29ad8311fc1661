"""Which provider serves a model: an alias first, then a provider that claims the name, then
the OpenAI-compatible upstream when one is configured, else `local`."""

from __future__ import annotations

from dataclasses import dataclass

from completions.conf import conf
from completions.providers.anthropic import AnthropicProvider
from completions.providers.base import Provider, Upstream
from completions.providers.local import LocalProvider
from completions.providers.openai_compatible import OpenAICompatibleProvider
from config.common.errors import ApiError

PROVIDERS: dict[str, Provider] = {
    "openai": OpenAICompatibleProvider(),
    "anthropic": AnthropicProvider(),
    "local": LocalProvider(),
}
_CLAIMING = ("local", "anthropic")  # checked in this order; openai-compatible takes the rest


@dataclass(frozen=True)
class AliasTarget:
    model: str
    provider: str = ""  # blank: route `model` by name


@dataclass(frozen=True)
class Snapshot:
    """A workspace's routing data, cached in-process (see completions.routing)."""

    aliases: dict[str, AliasTarget]
    credentials: dict[str, Upstream]


EMPTY = Snapshot(aliases={}, credentials={})


@dataclass(frozen=True)
class Route:
    provider: Provider
    model: str  # the name the upstream receives
    upstream: Upstream | None


def env_upstream(provider: str) -> Upstream | None:
    """The deployment-wide upstream for a provider, from the environment (None: unconfigured)."""
    return conf().upstreams.get(provider)


def upstream_for(snapshot: Snapshot, provider: str) -> Upstream | None:
    return snapshot.credentials.get(provider) or env_upstream(provider)


def route(snapshot: Snapshot, model: str) -> Route:
    target = snapshot.aliases.get(model)
    name = target.model if target else model
    if target and target.provider:
        provider = PROVIDERS[target.provider]
        upstream = upstream_for(snapshot, target.provider)
        if upstream is None and target.provider != "local":
            raise ApiError(
                400,
                f"The model '{model}' routes to the {target.provider} provider, "
                "which is not configured.",
                param="model",
                code="model_not_available",
            )
        return Route(provider=provider, model=name, upstream=upstream)
    for key in _CLAIMING:
        provider = PROVIDERS[key]
        if provider.claims(name):
            upstream = upstream_for(snapshot, key)
            if key == "local" or upstream is not None:
                return Route(provider=provider, model=name, upstream=upstream)
    upstream = upstream_for(snapshot, "openai")
    if upstream is not None:
        return Route(provider=PROVIDERS["openai"], model=name, upstream=upstream)
    return Route(provider=PROVIDERS["local"], model=name, upstream=None)
