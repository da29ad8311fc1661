"""OpenAPI shapes of the provisioning API (documentation only; see apis.py)."""

from __future__ import annotations

from rest_framework import serializers

from config.common.openapi import const, list_of


class WorkspaceSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("workspace")
    name = serializers.CharField()
    created_at = serializers.IntegerField()


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


WorkspaceListSerializer = list_of(WorkspaceSerializer, "WorkspaceList")
ApiKeyListSerializer = list_of(ApiKeySerializer, "ApiKeyList")
