"""Factories per app: plain functions that go through the services, as the product does."""

from accounts.models import Workspace
from accounts.services import api_key_create, workspace_create


def make_workspace(name: str = "acme") -> tuple[Workspace, str]:
    """A workspace and a raw API key for it."""
    workspace = workspace_create(name=name)
    return workspace, api_key_create(workspace=workspace, name="test").raw_key


# Forty distinct names: "I have a pet ferret called X." forty times must make forty memories.
FERRET_NAMES = [
    "Biscuit",
    "Nibbles",
    "Pepper",
    "Mango",
    "Ziggy",
    "Luna",
    "Oreo",
    "Bandit",
    "Noodle",
    "Pickles",
    "Waffles",
    "Gizmo",
    "Peanut",
    "Socks",
    "Whiskers",
    "Pippin",
    "Maple",
    "Juniper",
    "Sprout",
    "Tofu",
    "Bean",
    "Comet",
    "Dusty",
    "Fidget",
    "Gadget",
    "Hazel",
    "Inky",
    "Jasper",
    "Kiwi",
    "Lentil",
    "Mochi",
    "Nacho",
    "Olive",
    "Pudding",
    "Quill",
    "Rascal",
    "Sable",
    "Truffle",
    "Umber",
    "Velvet",
]
