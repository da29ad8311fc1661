from django.urls import path

from accounts import apis

urlpatterns = [
    path("workspaces", apis.WorkspaceListCreateApi.as_view()),
    path("workspaces/<str:workspace_id>/api_keys", apis.ApiKeyListCreateApi.as_view()),
    path("workspaces/<str:workspace_id>/api_keys/<str:key_id>", apis.ApiKeyRevokeApi.as_view()),
]
