from django.core.management.base import BaseCommand, CommandError

from accounts.apis import NameInput
from accounts.management.inputs import live_workspace, validated
from accounts.services import api_key_create
from config.common.errors import NotFound


class Command(BaseCommand):
    help = "Create an API key for a workspace; the key is printed once."

    def add_arguments(self, parser):
        parser.add_argument("workspace_id")
        parser.add_argument("--name", default="")

    def handle(self, *args, workspace_id, name, **options):
        workspace = live_workspace(workspace_id)
        if name:  # no --name: a key without one, as the admin makes
            name = validated(NameInput, name=name)["name"]
        try:
            created = api_key_create(workspace=workspace, name=name)
        except NotFound as exc:  # marked deleted meanwhile
            raise CommandError(exc.message) from None
        self.stdout.write(f"Key id: {created.api_key.id}")
        self.stdout.write(f"API key: {created.raw_key}")
