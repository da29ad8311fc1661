"""An update of a row deleted since it was read is refused and inserts nothing
(config.common.rows.lock_existing): Django's save() inserts the row its UPDATE did not find, so
a PATCH racing a DELETE brought the deleted row back — a memory its user deleted, an issuer
whose tokens then worked again, a collection, a tool."""

from __future__ import annotations

import pytest

from tests.factories import make_workspace

pytestmark = pytest.mark.django_db


def _memory(workspace):
    from memory.services import memory_create, memory_update

    memory = memory_create(workspace=workspace, user_id="u1", text="likes tea")
    return memory, lambda: memory_update(workspace=workspace, memory=memory, text="likes coffee")


def _collection(workspace):
    from memory.knowledge.services import collection_create, collection_update

    collection = collection_create(workspace=workspace, name="Docs")
    return collection, lambda: collection_update(
        workspace=workspace, collection=collection, description="d"
    )


def _issuer(workspace):
    from accounts.endusers.services import issuer_create, issuer_update

    issuer = issuer_create(
        workspace=workspace,
        issuer="https://id.example/",
        audiences=["app"],
        hs256_secret="s" * 32,
    )
    return issuer, lambda: issuer_update(workspace=workspace, issuer=issuer, audiences=["web"])


def _tool(workspace):
    from completions.agents.services import agent_create
    from completions.tools.services import tool_create, tool_update

    agent = agent_create(workspace=workspace, name="a1", model="local")
    values = {
        "name": "recall",
        "description": "Search.",
        "parameters": {"type": "object"},
        "type": "builtin",
        "builtin": "memory_search",
    }
    tool = tool_create(workspace=workspace, agent_id=agent.id, values=values)
    return tool, lambda: tool_update(workspace=workspace, tool=tool, values={"description": "x"})


@pytest.mark.parametrize("make", [_memory, _collection, _issuer, _tool])
def test_an_update_of_a_row_deleted_since_it_was_read_is_refused(make):
    workspace, _ = make_workspace()
    obj, update = make(workspace)
    model = type(obj)
    update()  # while it exists: updated
    model.objects.filter(pk=obj.pk).delete()  # deleted meanwhile, by another request
    with pytest.raises(model.DoesNotExist):
        update()
    assert not model.objects.filter(pk=obj.pk).exists()
