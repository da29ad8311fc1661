"""Reads for the gateway: always scoped to a workspace."""

from __future__ import annotations

from django.db.models import QuerySet

from accounts.models import Workspace
from completions.models import ModelAlias, ProviderCredential, UsageRecord


def model_alias_list(*, workspace: Workspace | str) -> QuerySet[ModelAlias]:
    return ModelAlias.objects.filter(workspace=workspace).order_by("alias")


def provider_credential_list(*, workspace: Workspace | str) -> QuerySet[ProviderCredential]:
    return ProviderCredential.objects.filter(workspace=workspace)


def usage_record_list(*, workspace: Workspace | str) -> QuerySet[UsageRecord]:
    return UsageRecord.objects.filter(workspace=workspace).order_by("-created_at")
