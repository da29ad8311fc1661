"""Knowledge collections: upload documents, extract and chunk them, embed them in Celery."""
