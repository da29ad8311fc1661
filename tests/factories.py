"""Factories per app: plain functions that go through the services, as the product does."""

from accounts.models import Workspace
from accounts.services import api_key_create, workspace_create


def make_workspace(name: str = "acme") -> tuple[Workspace, str]:
    """A workspace and a raw API key for it."""
    workspace = workspace_create(name=name)
    return workspace, api_key_create(workspace=workspace, name="test").raw_key


def runs_with_approvals(
    workspace: Workspace, *, user_id: str, n: int, expires_at=None, fields=lambda i: {}
) -> None:
    """`n` agent runs of `user_id`, each with two approvals asked in the order b, then a (to see
    them listed in the order they were asked); `fields(i)` adds to run i's columns."""
    from datetime import timedelta

    from django.utils import timezone

    from completions.tools.models import Approval, Execution

    expires_at = expires_at or timezone.now() + timedelta(minutes=15)
    for i in range(n):
        run = Execution.objects.create(
            workspace=workspace,
            agent_id="agent_x",
            user_id=user_id,
            model="m",
            route_model="m",
            **fields(i),
        )
        for call in ("call_b", "call_a"):
            Approval.objects.create(
                workspace=workspace,
                execution=run,
                user_id=user_id,
                tool_calls=[{"id": f"{call}_{i}"}],
                expires_at=expires_at,
            )


def paused_tool_run(workspace: Workspace, *, agent_name: str, model: str):
    """An agent with a built-in tool whose run is paused on a call, as a run awaiting approval
    is (completions.tools): the execution, for an approval or a deletion to point at."""
    from completions.agents.services import agent_create
    from completions.tools import services as tools

    agent = agent_create(workspace=workspace, name=agent_name, model=model)
    values = {"name": "recall", "type": "builtin", "builtin": "memory_search"}
    tools.tool_create(workspace=workspace, agent_id=agent.id, values=values)
    execution = tools.execution_create(
        workspace=workspace,
        agent_id=agent.id,
        user_id="alice",
        request_id="req_2",
        model=f"agent:{agent_name}",
        route_model="gpt-4o-mini",
        stream=False,
        body={},
        collection_ids=[],
    )
    call = {"id": "call_1", "type": "function", "function": {"name": "recall", "arguments": "{}"}}
    message = {"role": "assistant", "content": None, "tool_calls": [call]}
    tools.execution_pause(
        execution=execution, message=message, waiting=[call], ttl_seconds=60, stamps={}
    )
    return execution


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


def deleted_while_written(delete, insert_sql: str, params: list) -> list[BaseException]:
    """Run `delete()` on a thread while another connection holds an uncommitted row inserted by
    `insert_sql`, its foreign keys checked at once (so it locks what it references until it
    commits); commit that row once the deletion waits, and return what the deletion raised.
    Needs committed data (django_db(transaction=True))."""
    import threading

    import psycopg
    from django.db import connection

    db = connection.settings_dict
    url = f"postgresql://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}"
    errors: list[BaseException] = []

    def deleting_thread() -> None:
        try:
            delete()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    with psycopg.connect(url) as writer:
        writer.execute("SET CONSTRAINTS ALL IMMEDIATE")
        writer.execute(insert_sql, params)
        deleting = threading.Thread(target=deleting_thread)
        deleting.start()
        deleting.join(timeout=1.0)
        assert deleting.is_alive(), errors  # the deletion waits for the writer's row
        writer.commit()
    deleting.join(timeout=30)
    assert not deleting.is_alive()
    return errors
