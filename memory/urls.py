from django.urls import path

from memory.apis import conversations as conversation_apis
from memory.apis import memories as apis
from memory.apis import search as search_apis
from memory.apis import users as user_apis

urlpatterns = [
    path("memories", apis.MemoryListCreateApi.as_view()),
    path("memories/search", apis.MemorySearchApi.as_view()),
    path("memories/<id:memory_id>", apis.MemoryDetailApi.as_view()),
    path("memories/<id:memory_id>/history", apis.MemoryHistoryApi.as_view()),
    path("search", search_apis.SearchApi.as_view()),
    path("users", user_apis.UserListApi.as_view()),
    path("users/<user:user_id>", user_apis.UserApi.as_view()),
    path("users/<user:user_id>/export", user_apis.UserExportApi.as_view()),
    path("conversations", conversation_apis.ConversationListApi.as_view()),
    path("conversations/<id:conversation_id>", conversation_apis.ConversationDetailApi.as_view()),
    path("messages/<id:message_id>", conversation_apis.MessageDetailApi.as_view()),
    path(
        "conversations/<id:conversation_id>/messages",
        conversation_apis.ConversationMessagesApi.as_view(),
    ),
]
