"""Conversations API: list, read (with background processing counts), messages, bulk import."""

from __future__ import annotations

from django.http import QueryDict
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import APIView

from config.common.ids import identifier
from config.common.pagination import paginate
from memory import selectors, services
from memory.serializers import ImportInput, conversation_body, message_body


class ConversationListApi(APIView):
    def get(self, request):
        conversations = selectors.conversation_list(
            workspace=request.workspace,
            user_id=identifier(request.query_params.get("user_id"), "user_id"),
        )
        return Response(paginate(conversations, request.query_params, conversation_body))


class ConversationDetailApi(APIView):
    def get(self, request, conversation_id: str):
        conversation = selectors.conversation_get(
            workspace=request.workspace, conversation_id=conversation_id
        )
        counts = selectors.processing_counts(workspace=request.workspace, conversation=conversation)
        return Response(conversation_body(conversation, counts))


class ConversationMessagesApi(APIView):
    def get(self, request, conversation_id: str):
        conversation = selectors.conversation_get(
            workspace=request.workspace, conversation_id=conversation_id
        )
        params = request.query_params
        if "order" not in params:  # a conversation reads oldest first
            params = QueryDict(mutable=True)
            params.update(request.query_params)
            params["order"] = "asc"
        messages = selectors.message_list(workspace=request.workspace, conversation=conversation)
        return Response(paginate(messages, params, lambda m: message_body(m, conversation)))

    def post(self, request, conversation_id: str):
        serializer = ImportInput(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        conversation, created = services.conversation_get_or_create(
            workspace=request.workspace, external_id=conversation_id, user_id=data["user_id"]
        )
        rows = services.messages_import(
            workspace=request.workspace, conversation=conversation, messages=data["messages"]
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
