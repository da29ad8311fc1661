"""Used by `make run`: a demo workspace and key, plus a superuser when asked for by env."""

import os

from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import BaseCommand

from accounts.authentication import resolve_sync
from accounts.models import Workspace
from accounts.services import api_key_create, workspace_create
from config.embedded.servers import data_dir

DEMO_NAME = "demo"


class Command(BaseCommand):
    help = "Ensure the demo workspace and print its API key (kept in ENGRAM_DATA_DIR)."

    def add_arguments(self, parser):
        # `make run` migrates here: one Django start fewer (each costs seconds on a busy machine).
        parser.add_argument("--migrate", action="store_true", help="apply migrations first")

    def handle(self, *args, **options):
        if options["migrate"]:
            call_command("migrate", interactive=False, verbosity=0)
        key_file = data_dir() / "demo_api_key"
        raw = key_file.read_text().strip() if key_file.exists() else ""
        principal = resolve_sync(raw) if raw else None
        workspace = principal.workspace if principal is not None else None
        if workspace is None:
            workspace = Workspace.objects.filter(
                name=DEMO_NAME, deleted_at=None
            ).first() or workspace_create(name=DEMO_NAME)
            raw = api_key_create(workspace=workspace, name="demo").raw_key
            key_file.write_text(raw + "\n")
            key_file.chmod(0o600)
        self.stdout.write(f"Workspace: {workspace.id} ({workspace.name})")
        self.stdout.write(f"API key: {raw}")
        self._ensure_superuser()

    def _ensure_superuser(self):
        email = os.environ.get("ENGRAM_ADMIN_EMAIL")
        password = os.environ.get("ENGRAM_ADMIN_PASSWORD")
        if not (email and password):
            return
        users = get_user_model()
        user = users.objects.filter(username=email).first()
        if user is None:
            users.objects.create_superuser(username=email, email=email, password=password)
            self.stdout.write(f"Admin user: {email}")
        elif not user.check_password(password):
            user.set_password(password)
            user.save(update_fields=["password"])
