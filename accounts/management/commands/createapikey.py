from django.core.management.base import BaseCommand, CommandError

from accounts.models import Workspace
from accounts.services import api_key_create


class Command(BaseCommand):
    help = "Create an API key for a workspace; the key is printed once."

    def add_arguments(self, parser):
        parser.add_argument("workspace_id")
        parser.add_argument("--name", default="")

    def handle(self, *args, workspace_id, name, **options):
        try:
            workspace = Workspace.objects.get(id=workspace_id, deleted_at=None)
        except Workspace.DoesNotExist:
            raise CommandError(f"No workspace '{workspace_id}'.") from None
        created = api_key_create(workspace=workspace, name=name)
        self.stdout.write(f"Key id: {created.api_key.id}")
        self.stdout.write(f"API key: {created.raw_key}")
