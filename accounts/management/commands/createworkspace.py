from django.core.management.base import BaseCommand

from accounts.apis import NameInput
from accounts.management.inputs import validated
from accounts.services import api_key_create, workspace_create


class Command(BaseCommand):
    help = "Create a workspace (and, with --key, its first API key, printed once)."

    def add_arguments(self, parser):
        parser.add_argument("name")
        parser.add_argument("--key", action="store_true", help="also create an API key")

    def handle(self, *args, name, key, **options):
        name = validated(NameInput, name=name)["name"]
        workspace = workspace_create(name=name)
        self.stdout.write(f"Workspace: {workspace.id} {workspace.name}")
        if key:
            created = api_key_create(workspace=workspace, name="default")
            self.stdout.write(f"API key: {created.raw_key}")
