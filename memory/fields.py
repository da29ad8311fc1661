"""Column shapes that every searchable table shares: the embedding size and the tsvector."""

from django.contrib.postgres.search import SearchVector, SearchVectorField
from django.db import models

EMBEDDING_DIMENSIONS = 384  # all-MiniLM-L6-v2


def search_vector() -> models.GeneratedField:
    """A stored tsvector over `search_text`: the text as it is indexed, not as it is shown."""
    return models.GeneratedField(
        expression=SearchVector("search_text", config="english"),
        output_field=SearchVectorField(),
        db_persist=True,
    )
