"""Factories per app: plain functions that go through the services, as the product does."""

from accounts.models import Workspace
from accounts.services import api_key_create, workspace_create


def make_workspace(name: str = "acme") -> tuple[Workspace, str]:
    """A workspace and a raw API key for it."""
    workspace = workspace_create(name=name)
    return workspace, api_key_create(workspace=workspace, name="test").raw_key
