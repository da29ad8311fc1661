"""Conversations API: list, read (with background processing counts), messages, bulk import."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, extend_schema
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from accounts.authentication import EndUserAllowed
from accounts.endusers.scope import end_user, own_user, workspace_key_only
from completions.request import HEADERS, caller_user, user_mismatch
from config.common.errors import Invalid
from config.common.openapi import ID_SCHEMA, LIST_PARAMETERS, user_id_query
from config.common.pagination import paginate
from memory import selectors, services
from memory.apis import openapi as docs
from memory.serializers import (
    ImportInput,
    conversation_body,
    list_user_id,
    message_body,
    recalled_marked,
)

IDEMPOTENCY_HEADER = "Idempotency-Key"
_IDEMPOTENCY_KEY = OpenApiParameter(
    IDEMPOTENCY_HEADER,
    str,
    OpenApiParameter.HEADER,
    required=False,
    description=(
        "Names this import (at most 200 printable ASCII characters): an import into the same "
        "conversation under a key it already stored stores nothing and answers that import's "
        "messages, so a retry of an import whose answer was lost (a 503, a timeout) is stored "
        "once."
    ),
)


def _idempotency_key(request) -> str:
    key = request.headers.get(IDEMPOTENCY_HEADER, "")
    if len(key) > 200 or not all(" " <= c <= "~" for c in key):
        raise Invalid(
            f"{IDEMPOTENCY_HEADER} must be at most 200 printable ASCII characters.",
            field=IDEMPOTENCY_HEADER,
        )
    return key


class ConversationListApi(APIView):
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="List conversations",
        tags=["conversations"],
        parameters=[user_id_query(), *LIST_PARAMETERS],
        responses=docs.ConversationListSerializer,
    )
    def get(self, request):
        conversations = selectors.conversation_list(
            workspace=request.workspace,
            user_id=own_user(request, list_user_id(request.query_params)),
        )
        return Response(
            paginate(conversations, request.query_params, conversation_body, filters=("user_id",))
        )


_CONVERSATION_ID = OpenApiParameter(
    "conversation_id",
    ID_SCHEMA,
    OpenApiParameter.PATH,
    description="The client's id (x-conversation-id) or Engram's `conv_...` id.",
)


_USER_ID_HEADER = OpenApiParameter(
    HEADERS["user_id"],
    ID_SCHEMA,
    OpenApiParameter.HEADER,
    required=False,
    description="As the `user_id` query parameter.",
)
# A conversation named by its id alone: the user it is of, where several users have one so.
_CONVERSATION_USER = [
    user_id_query(
        "The user whose conversation the id names: a conversation id is unique per user, and a "
        "workspace key naming an id that several users have is answered 400 "
        "`ambiguous_conversation` without it. An end-user token's is its own."
    ),
    _USER_ID_HEADER,
]


def _conversation_user(request, *, body_user_id: str | None = None) -> str | None:
    """The user whose conversation a route's id names: an end-user token's own; a workspace
    key's `user_id` query parameter or x-user-id (one user, if both), else None: the id alone
    (selectors.conversation_find refuses it when several users have it). The chat door's one
    parser (`caller_user`) reads them, the query's `user_id` where it reads the body's: the
    same mismatch is the same error at both doors (403 naming x-user-id for a token's header).
    A body's `user_id` (the import's) is one more naming of that user: another is a 400 naming
    the parameter the caller sent (x-user-id, else the query's)."""
    user_id = request.query_params.get("user_id")
    if user_id is not None and not user_id.strip():
        list_user_id(request.query_params)  # 400: a blank ?user_id= is not "no user"
    named = caller_user(
        headers=request.headers, body={"user_id": user_id}, end_user=end_user(request)
    )
    if body_user_id is None or named is None:
        return body_user_id if named is None else named
    if body_user_id != named:
        # named by the parameter the caller sent: "than x-user-id" answered a caller who had
        # sent ?user_id= alone (x-user-id wins when both agree, as caller_user reads them)
        raise user_mismatch(
            named_by=HEADERS["user_id"]
            if request.headers.get(HEADERS["user_id"])
            else "the query's user_id"
        )
    return named


def _conversation(request, conversation_id: str):
    return selectors.conversation_get(
        workspace=request.workspace,
        conversation_id=conversation_id,
        user_id=_conversation_user(request),
    )


class ConversationDetailApi(APIView):
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="One conversation, with its background processing counts",
        tags=["conversations"],
        parameters=[_CONVERSATION_ID, *_CONVERSATION_USER],
        responses=docs.ConversationSerializer,
    )
    def get(self, request, conversation_id: str):
        conversation = _conversation(request, conversation_id)
        counts = selectors.processing_counts(workspace=request.workspace, conversation=conversation)
        return Response(conversation_body(conversation, counts))

    @extend_schema(
        summary="Delete a conversation and what was derived from it alone",
        description="Its messages, summary, sessions (but one that goes on in another "
        "conversation) and background jobs, the agent runs of its "
        "turns, and the memories extracted from its messages only (each keeps a DELETE in its "
        "history). A memory also said in another conversation, or added or reworded by hand, "
        "stays.",
        tags=["conversations"],
        parameters=[_CONVERSATION_ID, *_CONVERSATION_USER],
        responses={200: docs.ConversationDeletedSerializer},
    )
    def delete(self, request, conversation_id: str):
        conversation = _conversation(request, conversation_id)
        counts = services.conversation_delete(
            workspace=request.workspace, conversation=conversation
        )
        return Response(
            {
                "id": conversation_id,
                "object": "conversation.deleted",
                "deleted": True,
                "counts": counts,
            }
        )


class ConversationMessagesApi(APIView):
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="A conversation's messages (oldest first unless `order` says)",
        tags=["conversations"],
        parameters=[_CONVERSATION_ID, *_CONVERSATION_USER, *docs.MESSAGE_LIST_PARAMETERS],
        responses=docs.MessageListSerializer,
    )
    def get(self, request, conversation_id: str):
        conversation = _conversation(request, conversation_id)
        messages = selectors.message_list(workspace=request.workspace, conversation=conversation)
        page = paginate(
            messages,
            request.query_params,
            lambda m: message_body(m, conversation),
            by="created_at",
            default_order="asc",  # a conversation reads oldest first
            filters=("user_id",),  # which user's conversation (_conversation_user)
        )
        deleted = selectors.recalled_deleted(workspace=request.workspace, bodies=page["data"])
        recalled_marked(page["data"], deleted)
        return Response(page)

    @extend_schema(
        summary="Import messages (the conversation is created on first use)",
        description="Stored and extracted like chat turns; `created_at` keeps their dates.",
        tags=["conversations"],
        parameters=[_IDEMPOTENCY_KEY, *_CONVERSATION_USER],
        request=ImportInput,
        responses={201: docs.ImportedSerializer},
    )
    def post(self, request, conversation_id: str):
        workspace_key_only(request)
        idempotency_key = _idempotency_key(request)
        serializer = ImportInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        # the body's user_id, x-user-id or ?user_id= (as every route naming a conversation):
        # the ambiguous_conversation error tells a caller to send x-user-id, which this refused
        user_id = _conversation_user(request, body_user_id=data.get("user_id"))
        if user_id is None:
            raise Invalid(
                "Name the conversation's user: the body's user_id, x-user-id or ?user_id=.",
                field="user_id",
            )
        conversation, rows = services.conversation_import(
            workspace=request.workspace,
            external_id=conversation_id,
            user_id=user_id,
            messages=data["messages"],
            idempotency_key=idempotency_key,
        )
        counts = selectors.processing_counts(workspace=request.workspace, conversation=conversation)
        conversation.refresh_from_db()
        return Response(
            {
                "object": "list",
                "data": [message_body(m, conversation) for m in rows],
                "conversation": conversation_body(conversation, counts),
            },
            status=status.HTTP_201_CREATED,
        )


class MessageDetailApi(APIView):
    permission_classes = [EndUserAllowed]

    @extend_schema(
        summary="One message by its id",
        description="As the conversation's messages list it; an answer's `recalled` names its "
        "past messages by these ids.",
        tags=["conversations"],
        parameters=[
            OpenApiParameter(
                "message_id", ID_SCHEMA, OpenApiParameter.PATH, description="`msg_...`"
            )
        ],
        responses=docs.MessageSerializer,
    )
    def get(self, request, message_id: str):
        message = selectors.message_get(
            workspace=request.workspace, message_id=message_id, user_id=end_user(request)
        )
        body = message_body(message)
        deleted = selectors.recalled_deleted(workspace=request.workspace, bodies=[body])
        return Response(recalled_marked([body], deleted)[0])
