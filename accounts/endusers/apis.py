"""/v1/auth/issuers: the identity providers whose tokens a workspace accepts (workspace key)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiExample, extend_schema
from rest_framework import serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.endusers import openapi as docs
from accounts.endusers import selectors, services
from accounts.endusers.models import (
    ASYMMETRIC_ALGORITHMS,
    HMAC_ALGORITHMS,
    ISSUER_MAX_LENGTH,
    MAX_LEEWAY_SECONDS,
    MAX_SECRET_LENGTH,
    MIN_SECRET_LENGTH,
    Issuer,
)
from config.common.closed import ClosedSerializer
from config.common.errors import ApiError
from config.common.openapi import LIST_PARAMETERS, DeletedSerializer
from config.common.pagination import paginate
from config.common.times import unix_seconds


def issuer_body(issuer: Issuer) -> dict:
    return {
        "id": issuer.id,
        "object": "auth.issuer",
        "issuer": issuer.issuer,
        "audiences": issuer.audiences,
        "jwks_url": issuer.jwks_url or None,
        "has_hs256_secret": issuer.uses_secret,
        "algorithms": issuer.algorithms,
        "user_claim": issuer.user_claim,
        "required_scope": issuer.required_scope or None,
        "leeway_seconds": issuer.leeway_seconds,
        "created_at": unix_seconds(issuer.created_at),
        "updated_at": unix_seconds(issuer.updated_at),
    }


class IssuerInput(ClosedSerializer):
    issuer = serializers.CharField(max_length=ISSUER_MAX_LENGTH)
    audiences = serializers.ListField(
        child=serializers.CharField(max_length=500), min_length=1, max_length=20
    )
    jwks_url = serializers.URLField(max_length=1000, required=False, allow_null=True)
    hs256_secret = serializers.CharField(
        min_length=MIN_SECRET_LENGTH,
        max_length=MAX_SECRET_LENGTH,
        required=False,
        allow_null=True,
        write_only=True,
        trim_whitespace=False,
        help_text="HS256 signing secret (32+ characters); stored encrypted, never shown again.",
    )
    algorithms = serializers.ListField(
        child=serializers.ChoiceField(choices=[*ASYMMETRIC_ALGORITHMS, *HMAC_ALGORITHMS]),
        required=False,
        max_length=13,
        help_text="Default: RS256 and ES256 with a jwks_url, HS256 with a secret. Never `none`.",
    )
    user_claim = serializers.CharField(max_length=100, required=False)
    required_scope = serializers.CharField(max_length=200, required=False, allow_blank=True)
    leeway_seconds = serializers.IntegerField(
        min_value=0, max_value=MAX_LEEWAY_SECONDS, required=False
    )


_EXAMPLE = {
    "issuer": "https://example.auth0.com/",
    "audiences": ["https://api.example.com"],
    "jwks_url": "https://example.auth0.com/.well-known/jwks.json",
    "algorithms": ["RS256"],
}


def _changes(data: dict) -> dict:
    return {k: v for k, v in data.items() if k in services.FIELDS}


class IssuerListCreateApi(APIView):
    @extend_schema(
        summary="List the workspace's token issuers",
        tags=["auth"],
        parameters=LIST_PARAMETERS,
        responses=docs.IssuerListSerializer,
    )
    def get(self, request):
        issuers = selectors.issuer_list(workspace=request.workspace)
        return Response(paginate(issuers, request.query_params, issuer_body))

    @extend_schema(
        summary="Trust an issuer's end-user tokens (JWKS URL or HS256 secret)",
        tags=["auth"],
        request=IssuerInput,
        responses={201: docs.IssuerSerializer},
        examples=[OpenApiExample("Auth0", value=_EXAMPLE, request_only=True)],
    )
    def post(self, request):
        data = IssuerInput(data=request.data)
        data.is_valid(raise_exception=True)
        issuer = services.issuer_create(
            workspace=request.workspace, **_changes(data.validated_data)
        )
        return Response(issuer_body(issuer), status=status.HTTP_201_CREATED)


class IssuerDetailApi(APIView):
    @extend_schema(summary="One token issuer", tags=["auth"], responses=docs.IssuerSerializer)
    def get(self, request, issuer_id: str):
        issuer = selectors.issuer_get(workspace=request.workspace, issuer_id=issuer_id)
        return Response(issuer_body(issuer))

    @extend_schema(
        summary="Edit a token issuer (its cached tokens are forgotten everywhere)",
        tags=["auth"],
        request=IssuerInput(partial=True),
        responses=docs.IssuerSerializer,
    )
    def patch(self, request, issuer_id: str):
        issuer = selectors.issuer_get(workspace=request.workspace, issuer_id=issuer_id)
        data = IssuerInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        changes = _changes(data.validated_data)
        if not changes:
            raise ApiError(400, f"Nothing to update: give one of {', '.join(services.FIELDS)}.")
        issuer = services.issuer_update(workspace=request.workspace, issuer=issuer, changes=changes)
        return Response(issuer_body(issuer))

    @extend_schema(
        summary="Stop trusting an issuer (its tokens stop at once)",
        tags=["auth"],
        responses={200: DeletedSerializer},
    )
    def delete(self, request, issuer_id: str):
        issuer = selectors.issuer_get(workspace=request.workspace, issuer_id=issuer_id)
        services.issuer_delete(workspace=request.workspace, issuer=issuer)
        return Response({"id": issuer_id, "object": "auth.issuer.deleted", "deleted": True})
