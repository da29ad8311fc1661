"""Writes for the gateway's configuration (the admin uses the same functions)."""

from __future__ import annotations

from django.db import transaction

from accounts.models import Workspace
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
    return credential


@transaction.atomic
def model_alias_set(
    *, workspace: Workspace, alias: str, target_model: str, provider: str = ""
) -> ModelAlias:
    obj, _ = ModelAlias.objects.update_or_create(
        workspace=workspace,
        alias=alias,
        defaults={"target_model": target_model, "provider": provider},
    )
    return obj
