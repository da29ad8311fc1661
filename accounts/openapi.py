"""OpenAPI shapes of the provisioning API (documentation only; see apis.py)."""

from __future__ import annotations

from rest_framework import serializers

from config.common.openapi import const, list_of


class WorkspaceSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("workspace")
    name = serializers.CharField()
    created_at = serializers.IntegerField()


class WorkspaceDeletingSerializer(WorkspaceSerializer):
    deleted_at = serializers.IntegerField(
        help_text="When the deletion was asked for (the first DELETE); its keys stopped then."
    )
    deleted = serializers.BooleanField(
        help_text="true: deletion accepted. Its rows are deleted in the background; then the "
        "workspace is gone (404)."
    )


class ApiKeySerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("api_key")
    name = serializers.CharField()
    prefix = serializers.CharField(help_text="The key's first characters, to recognise it.")
    created_at = serializers.IntegerField()
    last_used_at = serializers.IntegerField(allow_null=True)
    revoked_at = serializers.IntegerField(allow_null=True)


class ApiKeyCreatedSerializer(ApiKeySerializer):
    key = serializers.CharField(help_text="The raw key: shown this once, never again.")


class ApiKeyRevokedSerializer(ApiKeySerializer):
    deleted = serializers.BooleanField()


class RatesSerializer(serializers.Serializer):
    rpm = serializers.IntegerField(allow_null=True, help_text="Requests per minute.")
    tpm = serializers.IntegerField(allow_null=True, help_text="Tokens per minute.")
    max_concurrent = serializers.IntegerField(allow_null=True)


class BudgetSerializer(serializers.Serializer):
    credits = serializers.FloatField(allow_null=True, help_text="Per period; null: none.")
    period = serializers.ChoiceField(choices=["day", "week", "month", "none"])


class CreditUnitSerializer(serializers.Serializer):
    name = serializers.CharField()
    per_usd = serializers.FloatField(help_text="Credits per US dollar of list price.")


class WorkspaceDetailSerializer(WorkspaceSerializer):
    limits = RatesSerializer()
    budget = BudgetSerializer()
    end_user_limits = RatesSerializer(help_text="Each end user's.")
    end_user_budget = BudgetSerializer(help_text="Each end user's.")
    credit_unit = CreditUnitSerializer()


class ApiKeyLimitsSerializer(ApiKeySerializer):
    limits = RatesSerializer()
    budget = BudgetSerializer()


WorkspaceListSerializer = list_of(WorkspaceSerializer, "WorkspaceList")
ApiKeyListSerializer = list_of(ApiKeySerializer, "ApiKeyList")
