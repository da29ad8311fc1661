from django.urls import path

from completions import apis

urlpatterns = [
    path("chat/completions", apis.chat_completions),
    path("context", apis.context_preview),
    path("models", apis.models_list),
    path("models/<path:model_id>", apis.models_retrieve),
]
