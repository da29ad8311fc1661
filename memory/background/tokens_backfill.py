"""Token vectors for the messages embedded before the worker kept them (memory.retrieval.late):
`python manage.py backfilltokens`. Safe to stop and run again: each batch is committed, and a
batch takes only messages that still have none."""

from __future__ import annotations

from django.db import connection, transaction
from django.db.models import Exists, OuterRef

from accounts.models import Workspace
from memory.embeddings import get_embedder
from memory.models import Message, MessageTokens
from memory.retrieval import late
from memory.services.indexing import message_tokens_store
from memory.text import message_search_text

BATCH = 200


def tokens_backfill(*, batch: int = BATCH) -> int:
    """Embed, batch by batch, the embedded messages without token vectors (what the worker
    embedded them from, `message_search_text`) and store their tokens; how many were stored."""
    done, after = 0, ""
    while True:
        rows = list(
            Message.objects.filter(embedding__isnull=False, id__gt=after)
            .exclude(content="")
            .filter(~Exists(MessageTokens.objects.filter(message_id=OuterRef("pk"))))
            .order_by("id")
            .only("id", "workspace_id", "role", "name", "content", "created_at")[:batch]
        )
        if not rows:
            return done
        after = rows[-1].id
        texts = [
            message_search_text(
                role=m.role, name=m.name, content=m.content, created_at=m.created_at
            )
            for m in rows
        ]
        _, tokens = get_embedder().embed_with_tokens(texts)
        if all(t is None for t in tokens):
            return done  # a backend without token vectors: nothing to store, ever
        by_workspace: dict[str, dict[str, bytes]] = {}
        for message, token in zip(rows, tokens, strict=True):
            if token is not None:
                by_workspace.setdefault(message.workspace_id, {})[message.id] = late.pack(token)
        with transaction.atomic():
            for workspace_id, packed in by_workspace.items():
                message_tokens_store(workspace=Workspace(id=workspace_id), packed=packed)
        done += sum(len(p) for p in by_workspace.values())
        connection.close_if_unusable_or_obsolete()
