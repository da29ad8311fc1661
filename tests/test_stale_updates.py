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
    return issuer, lambda: issuer_update(
        workspace=workspace, issuer=issuer, changes={"audiences": ["web"]}
    )


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


@pytest.mark.django_db(transaction=True)
def test_deleting_a_memory_while_a_source_is_linked_to_it_deletes_both():
    """The other side of the same lock: a source an extraction run links while the user deletes
    the memory is deleted with it, instead of failing the deletion's commit (a 500)."""
    from memory.models import Memory
    from memory.services import (
        conversation_get_or_create,
        memory_create,
        memory_delete,
        messages_append,
    )
    from tests.factories import deleted_while_written

    workspace, _ = make_workspace()
    conversation, _ = conversation_get_or_create(workspace=workspace, external_id="c", user_id="u1")
    [message] = messages_append(
        workspace=workspace,
        conversation=conversation,
        session=None,
        messages=[{"role": "user", "content": "I like tea."}],
    )
    memory = memory_create(workspace=workspace, user_id="u1", text="likes tea")
    errors = deleted_while_written(
        lambda: memory_delete(workspace=workspace, memory=memory),
        "INSERT INTO memory_memory_sources (memory_id, message_id) VALUES (%s, %s)",
        [memory.id, message.id],
    )
    assert not errors
    assert not Memory.objects.filter(id=memory.id).exists()
    assert not Memory.sources.through.objects.filter(memory_id=memory.id).exists()
