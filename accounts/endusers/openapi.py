"""OpenAPI shapes of the issuers API (documentation only; see apis.py)."""

from __future__ import annotations

from rest_framework import serializers

from config.common.openapi import const, list_of


class IssuerSerializer(serializers.Serializer):
    id = serializers.CharField()
    object = const("auth.issuer")
    issuer = serializers.CharField(help_text="The tokens' `iss`.")
    audiences = serializers.ListField(child=serializers.CharField())
    jwks_url = serializers.CharField(allow_null=True)
    has_hs256_secret = serializers.BooleanField(help_text="The secret itself is never shown.")
    algorithms = serializers.ListField(child=serializers.CharField())
    user_claim = serializers.CharField()
    required_scope = serializers.CharField(allow_null=True)
    leeway_seconds = serializers.IntegerField()
    created_at = serializers.IntegerField()
    updated_at = serializers.IntegerField()


IssuerListSerializer = list_of(IssuerSerializer, "IssuerList")
