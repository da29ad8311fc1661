"""Writes for the gateway's configuration: the API and the admin both call these, and each
invalidates the workspace's cached routes (completions.routing), so a change made in this
process applies to its next request; other processes see it within ENGRAM_ROUTING_CACHE_SECONDS.
"""

from __future__ import annotations

from django.db import transaction

from accounts.models import Workspace
from completions import routing
from completions.models import ModelAlias, ProviderCredential


@transaction.atomic
def provider_credential_set(
    *, workspace: Workspace, provider: str, secret: str | None = None, base_url: str = ""
) -> ProviderCredential:
    """Create or update the workspace's credential for `provider`; secret None keeps the old one."""
    credential = (
        ProviderCredential.objects.select_for_update()
        .filter(workspace=workspace, provider=provider)
        .first()
    ) or ProviderCredential(workspace=workspace, provider=provider)
    credential.base_url = base_url
    if secret is not None:
        credential.set_secret(secret)
    credential.save()
    routing.invalidate(workspace.id)
    return credential


@transaction.atomic
def provider_credential_delete(*, workspace: Workspace, provider: str) -> None:
    """Remove the workspace's credential for `provider` (nothing to do if there is none)."""
    ProviderCredential.objects.filter(workspace=workspace, provider=provider).delete()
    routing.invalidate(workspace.id)


@transaction.atomic
def model_alias_set(
    *, workspace: Workspace, alias: str, target_model: str, provider: str = ""
) -> ModelAlias:
    obj, _ = ModelAlias.objects.update_or_create(
        workspace=workspace,
        alias=alias,
        defaults={"target_model": target_model, "provider": provider},
    )
    routing.invalidate(workspace.id)
    return obj


@transaction.atomic
def model_alias_delete(*, workspace: Workspace, alias: str) -> None:
    """Remove the workspace's alias (nothing to do if there is none)."""
    ModelAlias.objects.filter(workspace=workspace, alias=alias).delete()
    routing.invalidate(workspace.id)
