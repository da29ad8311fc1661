from django.urls import path

from completions import apis
from completions.usage_api import UsageApi

urlpatterns = [
    path("chat/completions", apis.chat_completions),
    path("context", apis.context_preview),
    path("embeddings", apis.embeddings_create),
    path("models", apis.models_list),
    path("models/<path:model_id>", apis.models_retrieve),
    path("usage", UsageApi.as_view()),
]
