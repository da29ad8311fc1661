"""`python manage.py backfilltokens`: token vectors for messages embedded before the worker
kept them (an upgrade), so /v1/search's token match reads every message
(memory.retrieval.late)."""

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from memory.background.tokens_backfill import BATCH, tokens_backfill


class Command(BaseCommand):
    help = "Store token vectors for the embedded messages that have none (safe to re-run)."

    def add_arguments(self, parser):
        parser.add_argument("--batch", type=int, default=BATCH, help="messages a batch")

    def handle(self, *args, **options):
        if not settings.ENGRAM_SEARCH_TOKEN_MATCH:
            raise CommandError("ENGRAM_SEARCH_TOKEN_MATCH is off: no token vectors are kept.")
        if options["batch"] < 1:
            raise CommandError("--batch is at least 1.")
        done = tokens_backfill(batch=options["batch"])
        self.stdout.write(f"token vectors stored for {done} messages")
