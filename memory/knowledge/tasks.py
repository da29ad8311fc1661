"""Celery tasks for knowledge collections (the `knowledge` queue, routed by `knowledge.*`)."""

from celery import shared_task

from config.celery import time_limits


@shared_task(
    name="knowledge.ingest_document",
    bind=True,
    acks_late=True,
    ignore_result=True,
    **time_limits("knowledge.ingest_document"),
    max_retries=30,
)
def ingest_document(self, document_id: str) -> None:
    from memory.knowledge.services import document_ingest, document_lease, document_send

    outcome = document_ingest(document_id=document_id)
    if outcome == "busy":
        # Another run holds the document. If it is alive it finishes and the retry finds the
        # document ready; if it died, its lease lapses and the retry resumes the work.
        raise self.retry(countdown=document_lease().total_seconds() + 5)
    if outcome == "again":  # out of time: continue in a fresh run from the last batch
        raise self.retry(countdown=1)
    if outcome == "yield":  # its slice is over: a new run, queued behind what waits meanwhile
        document_send(document_id)
