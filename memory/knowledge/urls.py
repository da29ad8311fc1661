from django.urls import path

from memory.knowledge import apis

urlpatterns = [
    path("collections", apis.CollectionListCreateApi.as_view()),
    path("collections/search", apis.CollectionSearchApi.as_view()),
    path("collections/<str:collection_id>", apis.CollectionDetailApi.as_view()),
    path("collections/<str:collection_id>/documents", apis.DocumentListCreateApi.as_view()),
    path(
        "collections/<str:collection_id>/documents/<str:document_id>",
        apis.DocumentDetailApi.as_view(),
    ),
]
