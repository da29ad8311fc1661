from django.urls import path

from memory.knowledge import apis

urlpatterns = [
    path("collections", apis.CollectionListCreateApi.as_view()),
    path("collections/search", apis.CollectionSearchApi.as_view()),
    path("collections/<id:collection_id>", apis.CollectionDetailApi.as_view()),
    path("collections/<id:collection_id>/documents", apis.DocumentListCreateApi.as_view()),
    path(
        "collections/<id:collection_id>/documents/<id:document_id>",
        apis.DocumentDetailApi.as_view(),
    ),
]
