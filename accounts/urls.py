from django.urls import path

from accounts import apis

urlpatterns = [
    path("workspaces", apis.WorkspaceListCreateApi.as_view()),
    path("workspaces/<id:workspace_id>", apis.WorkspaceDetailApi.as_view()),
    path("workspaces/<id:workspace_id>/api_keys", apis.ApiKeyListCreateApi.as_view()),
    path("workspaces/<id:workspace_id>/api_keys/<id:key_id>", apis.ApiKeyRevokeApi.as_view()),
]
