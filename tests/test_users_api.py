"""GET /v1/users and /v1/users/{id}: a workspace's end users, their counts and last activity."""

import json

import httpx
import pytest

from memory.models import Conversation, Session
from tests.factories import runs_with_approvals
from tests.test_errors import assert_envelope


def user_export(workspace, user_id: str) -> dict:
    """The export's document, read through as the doors stream it."""
    from memory.export import user_export_parts

    return json.loads(b"".join(user_export_parts(workspace=workspace, user_id=user_id)))


def _remember(client, user_id, text):
    response = client.post("/v1/memories", json={"user_id": user_id, "text": text})
    assert response.status_code == 201, response.text
    return response.json()


def _import(client, conversation_id, user_id, *texts):
    response = client.post(
        f"/v1/conversations/{conversation_id}/messages",
        json={"user_id": user_id, "messages": [{"role": "user", "content": t} for t in texts]},
    )
    assert response.status_code == 201, response.text


@pytest.fixture
def people(http, outsider_http, owner):
    """alice: 2 memories, 1 conversation of 3 messages; bob: 1 memory; carol: a session only;
    the outsider's workspace has its own alice and a dave."""
    _remember(http, "alice", "Alice lives in Oslo.")
    _remember(http, "alice", "Alice likes tea.")
    _import(http, "c-alice", "alice", "Hello", "I moved to Oslo", "Bye")
    _remember(http, "bob", "Bob lives in Bergen.")
    Session.objects.create(workspace=owner[0], external_id="s-carol", user_id="carol")
    Session.objects.create(workspace=owner[0], external_id="s-anon", user_id="")
    _remember(outsider_http, "alice", "Other Alice lives in Rome.")
    _remember(outsider_http, "dave", "Dave lives in Paris.")


def test_list_names_each_user_of_the_workspace_once_with_counts(http, people):
    body = http.get("/v1/users", params={"order": "asc"}).json()
    assert body["object"] == "list" and body["has_more"] is False
    assert [u["id"] for u in body["data"]] == ["alice", "bob", "carol"]
    alice, bob, carol = body["data"]
    assert alice["object"] == "user"
    assert alice["counts"] == {"memories": 2, "conversations": 1, "messages": 3}
    assert bob["counts"] == {"memories": 1, "conversations": 0, "messages": 0}
    assert carol["counts"] == {"memories": 0, "conversations": 0, "messages": 0}
    assert all(isinstance(u["last_active_at"], int) for u in body["data"])
    assert body["first_id"] == "alice" and body["last_id"] == "carol"
    # newest-id-first by default, as the other lists
    assert [u["id"] for u in http.get("/v1/users").json()["data"]] == ["carol", "bob", "alice"]


def test_list_pages_by_cursor(http, people):
    first = http.get("/v1/users", params={"order": "asc", "limit": 2}).json()
    assert [u["id"] for u in first["data"]] == ["alice", "bob"] and first["has_more"] is True
    rest = http.get(
        "/v1/users", params={"order": "asc", "limit": 2, "after": first["last_id"]}
    ).json()
    assert [u["id"] for u in rest["data"]] == ["carol"] and rest["has_more"] is False
    back = http.get("/v1/users", params={"order": "desc", "before": "alice"}).json()
    assert [u["id"] for u in back["data"]] == ["carol", "bob"]
    # `before` is the page just before the cursor (not the list's first page), in the list's
    # order; has_more says more precede it
    just_before = http.get("/v1/users", params={"order": "asc", "limit": 1, "before": "carol"})
    assert [u["id"] for u in just_before.json()["data"]] == ["bob"]
    assert just_before.json()["has_more"] is True
    earliest = http.get("/v1/users", params={"order": "asc", "limit": 1, "before": "bob"}).json()
    assert [u["id"] for u in earliest["data"]] == ["alice"] and earliest["has_more"] is False
    for limit in (0, "+5", "٣", " 5", "2.0"):
        bad = http.get("/v1/users", params={"limit": limit})
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "limit", limit


def test_detail_adds_sessions_and_summaries(http, people):
    Conversation.objects.filter(external_id="c-alice").update(summary="Alice moved to Oslo.")
    body = http.get("/v1/users/alice").json()
    assert body["id"] == "alice" and body["object"] == "user"
    assert body["counts"] == {
        "memories": 2,
        "conversations": 1,
        "messages": 3,
        "sessions": 0,
        "summaries": 1,
        "memory_events": 2,
        "executions": 0,
    }
    carol = http.get("/v1/users/carol").json()
    assert carol["counts"]["sessions"] == 1 and carol["last_active_at"] is not None


def test_a_user_whose_memories_were_all_deleted_is_listed_while_their_history_is_kept(http, people):
    """Deleted memories leave their texts in the history until the user is erased: such a user
    was "No user" (404) and never listed, so nobody could find them to export or erase."""
    memory = _remember(http, "erin", "Erin has diabetes.")
    assert http.delete(f"/v1/memories/{memory['id']}").status_code == 200
    erin = http.get("/v1/users/erin")
    assert erin.status_code == 200, erin.text
    assert erin.json()["counts"] == {
        "memories": 0,
        "conversations": 0,
        "messages": 0,
        "sessions": 0,
        "summaries": 0,
        "memory_events": 2,
        "executions": 0,
    }
    assert erin.json()["last_active_at"] is not None
    listed = http.get("/v1/users", params={"order": "asc"}).json()["data"]
    assert [u["id"] for u in listed] == ["alice", "bob", "carol", "erin"]
    assert "diabetes" in http.get("/v1/users/erin/export").text
    assert http.delete("/v1/users/erin").json()["counts"]["memory_events"] == 2
    assert http.get("/v1/users/erin").status_code == 404
    assert "erin" not in [u["id"] for u in http.get("/v1/users").json()["data"]]


def test_the_export_of_a_user_with_nothing_stored_is_404_as_reading_them_is(http, people):
    """GET /v1/users/nobody was 404 while /v1/users/nobody/export was an empty 200 document,
    as if the user existed; an outsider's user is nobody here either."""
    for user_id in ("nobody", "dave"):
        read, export = http.get(f"/v1/users/{user_id}"), http.get(f"/v1/users/{user_id}/export")
        assert read.status_code == export.status_code == 404, export.text
        assert export.json() == read.json()  # the same envelope, word for word
        assert export.json()["error"]["code"] == "user_not_found"
    # a user with only a session (carol) or only a history is still somebody
    assert http.get("/v1/users/carol/export").json()["sessions"][0]["id"] == "s-carol"
    assert http.delete("/v1/users/alice").status_code == 200
    assert http.get("/v1/users/alice/export").status_code == 404  # erased: nobody now


def test_an_outsiders_user_is_not_found_and_never_listed(http, outsider_http, people):
    missing = http.get("/v1/users/dave")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "user_not_found"
    assert missing.json()["error"]["param"] == "user_id"
    # the outsider sees its own alice (one memory, no conversation), not the owner's
    theirs = outsider_http.get("/v1/users/alice").json()
    assert theirs["counts"]["memories"] == 1 and theirs["counts"]["conversations"] == 0
    listed = outsider_http.get("/v1/users", params={"order": "asc"}).json()
    assert [u["id"] for u in listed["data"]] == ["alice", "dave"]


def test_users_need_a_workspace_key(anon_http, operator_http, people):
    assert anon_http.get("/v1/users").status_code == 401
    assert operator_http.get("/v1/users").status_code == 403


def test_an_erased_user_is_gone(http, people):
    assert http.delete("/v1/users/bob").status_code == 200
    assert http.get("/v1/users/bob").status_code == 404
    assert "bob" not in [u["id"] for u in http.get("/v1/users").json()["data"]]


def test_erasing_a_user_while_their_turns_run_is_never_a_5xx(engram_server, owner, upstream):
    """An erasure racing a user's turns and imports: each waits for the other (one lock per
    user), so the erasure and the turns all answer — before, the erasure deadlocked or hit a
    message inserted after the messages went, and turns failed on a conversation deleted under
    them."""
    from concurrent.futures import ThreadPoolExecutor

    key = owner[1]
    headers = {"Authorization": f"Bearer {key}"}
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "I have a cat."}]}

    def one(i: int) -> int:
        with httpx.Client(base_url=engram_server.url, headers=headers, timeout=60) as http:
            if i % 4 == 0:
                return http.delete("/v1/users/racer").status_code
            if i % 4 == 1:
                imported = {"user_id": "racer", "messages": [{"role": "user", "content": f"m{i}"}]}
                return http.post(
                    "/v1/conversations/race-import/messages", json=imported
                ).status_code
            turn = {"x-user-id": "racer", "x-conversation-id": f"race-{i % 3}"}
            return http.post("/v1/chat/completions", json=chat, headers=turn).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = list(pool.map(one, range(96)))
    assert all(s < 500 for s in statuses), sorted(set(statuses))
    assert statuses.count(200) >= 96 // 2  # every erasure and chat turn answered
    with httpx.Client(base_url=engram_server.url, headers=headers, timeout=60) as http:
        assert http.delete("/v1/users/racer").status_code == 200
        assert http.get("/v1/conversations", params={"user_id": "racer"}).json()["data"] == []


def test_a_user_id_with_a_slash_is_read_exported_and_erased_with_it_encoded(http):
    """An id may hold "/" ("org/alice"); in a path it goes encoded, %2F."""
    _remember(http, "org/alice", "Alice has a dog named Rex.")
    _remember(http, "org", "The org has no dog.")
    assert http.get("/v1/users/org%2Falice").json()["counts"]["memories"] == 1
    export = http.get("/v1/users/org%2Falice/export")
    assert export.status_code == 200 and "Rex" in export.text and "no dog" not in export.text
    # A literal slash: no such route, a 404 that says how to send the id (it said "Unknown
    # path" alone), and nothing read or erased under another id ("org" or "alice").
    for method, path in [
        ("GET", "/v1/users/org/alice"),
        ("GET", "/v1/users/org/alice/export"),
        ("GET", "/v1/users/org/alice/memories"),
        ("DELETE", "/v1/users/org/alice"),
        ("GET", "/api/v1/conversations/org/alice/messages"),
    ]:
        error = assert_envelope(http.request(method, path), 404, code="not_found")
        assert error["message"].startswith(f"Unknown path: {method} "), error
        assert "encoded in a path, as %2F: /v1/users/org%2Falice" in error["message"], error
    assert "%2F" not in assert_envelope(http.get("/v1/nothing-here"), 404)["message"]
    assert http.get("/v1/users/org%2Falice").json()["counts"]["memories"] == 1
    assert http.delete("/v1/users/org%2Falice").status_code == 200
    assert http.get("/v1/users/org%2Falice").status_code == 404
    assert http.get("/v1/users/org").json()["counts"]["memories"] == 1  # another user


@pytest.mark.parametrize("where", ["header", "body"])
def test_a_user_id_beyond_ascii_is_refused_as_the_rule_says(http, where):
    """A header's bytes are read as Latin-1: "ü" in x-user-id was "Ã¼", another user than the
    body's "ü". Ids are ASCII at every door, as the OpenAPI document says."""
    body = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
    if where == "header":
        response = http.post("/v1/chat/completions", json=body, headers={"x-user-id": "ü".encode()})
        param = "x-user-id"
    else:
        response = http.post("/v1/memories", json={"user_id": "ü", "text": "x"})
        param = "user_id"
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_erasure_deletes_the_users_tool_runs_and_keeps_usage_under_a_pseudonym(
    sdk, http, upstream, tool_server, owner
):
    """`DELETE /v1/users/{id}` erases every trace: an agent's tool run (its messages, tool
    arguments and results, approvals) went on being served by GET /v1/executions/{id}, and
    usage records named the user (an email, often) in /v1/usage. The records stay for billing
    and budgets under `erased:<digest>`, which a later budget seed still counts."""
    from completions import selectors
    from completions.models import UsageRecord
    from completions.usage import buffer
    from tests.test_tools import ask, engram, make_agent, make_tool, script_call_then_answer
    from tests.upstream import tool_call

    agent = make_agent(http)
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    answer = ask(sdk, agent, text="Weather where I live, Oslo?", user="ann@example.com")
    execution_id = engram(answer)["execution_id"]
    bystander = ask(sdk, agent, text="And here?", user="bob")  # upstream's default answer
    assert http.get(f"/v1/executions/{execution_id}").status_code == 200
    buffer.flush()
    spent = selectors.usage_credits_since(workspace=owner[0], since=None, user_id="ann@example.com")

    erased = http.delete("/v1/users/ann@example.com")

    assert erased.status_code == 200, erased.text
    counts = erased.json()["counts"]
    assert counts["executions"] == 1 and counts["usage_records_pseudonymized"] == 1
    assert http.get(f"/v1/executions/{execution_id}").status_code == 404
    assert http.get(f"/v1/executions/{engram(bystander)['execution_id']}").status_code == 200
    by_user = http.get("/v1/usage", params={"group_by": "user"}).json()
    assert "ann@example.com" not in json.dumps(by_user)
    assert not UsageRecord.objects.filter(user_id="ann@example.com").exists()
    kept = UsageRecord.objects.get(workspace=owner[0], user_id__startswith="erased:")
    assert kept.credits == pytest.approx(spent) and UsageRecord.objects.filter(user_id="bob")
    assert selectors.usage_credits_since(
        workspace=owner[0], since=None, user_id="ann@example.com"
    ) == pytest.approx(spent)


def _late_record(workspace, user_id: str, request_id: str, client_request_id: str = "") -> None:
    """A usage record still in a process's buffer at the erasure, flushed after it."""
    from completions.usage import Usage, buffer

    buffer.add(
        Usage(
            workspace_id=workspace.id,
            request_id=request_id,
            client_request_id=client_request_id,
            status_code=200,
            latency_ms=1.0,
            user_id=user_id,
        )
    )
    buffer.flush()


def test_an_erasure_leaves_no_client_request_id_on_the_users_usage(http, owner):
    """A client's own request id (`metadata.request_id`) is the client's words about the user —
    here their email — and stayed on the pseudonymized records; both passes blank it."""
    from completions.models import UsageRecord

    _late_record(owner[0], "ann", "req_1", client_request_id="ann@example.com:order-42")
    _late_record(owner[0], "bob", "req_2", client_request_id="bob:order-7")

    assert http.delete("/v1/users/ann").status_code == 200

    assert UsageRecord.objects.get(request_id="req_1").client_request_id == ""
    assert UsageRecord.objects.get(request_id="req_2").client_request_id == "bob:order-7"
    assert not UsageRecord.objects.filter(client_request_id__contains="ann").exists()


def test_an_erasure_s_second_pass_is_done_by_the_sweep_when_its_task_was_lost(
    http, owner, monkeypatch
):
    """The second pass over usage records (for those still buffered at the erasure) was only a
    Celery task sent on commit: lost with the broker's data, a record flushed late kept the
    plain user id for good. The pass is owed in the database and the sweep does it."""
    from completions import services
    from completions.models import UsageRecord
    from completions.sweep import sweep_jobs
    from config.celery import app

    monkeypatch.setattr(services, "ERASED_AGAIN_SECONDS", 0)  # due at once: no waiting here
    _late_record(owner[0], "ann", "req_before")
    assert http.delete("/v1/users/ann").status_code == 200
    app.control.purge()  # the second pass's task, lost with Redis's data
    _late_record(owner[0], "ann", "req_late")

    sweep_jobs()  # Celery beat's tick

    assert not UsageRecord.objects.filter(user_id="ann").exists()
    pseudonym = services.erased_user_id(workspace_id=owner[0].id, user_id="ann")
    assert UsageRecord.objects.get(request_id="req_late").user_id == pseudonym
    from completions.models import UsageErasure

    assert not UsageErasure.objects.filter(user_id="ann").exists()  # the row naming ann is gone
    assert services.usage_erasures_sweep() == 0  # done once


def test_an_erasure_s_second_pass_on_time_is_owed_no_more(http, owner, monkeypatch):
    """The task on time does the pass and settles what the database owes: the sweep after it
    has nothing to do; a second delivery of the task renames nothing more."""
    from completions import services
    from completions.models import UsageErasure, UsageRecord
    from completions.tasks import usage_forget_user_task

    monkeypatch.setattr(services, "ERASED_AGAIN_SECONDS", 0)
    _late_record(owner[0], "ann", "req_before")
    assert http.delete("/v1/users/ann").status_code == 200
    _late_record(owner[0], "ann", "req_late")

    usage_forget_user_task(workspace_id=owner[0].id, user_id="ann")  # as its worker runs it
    usage_forget_user_task(workspace_id=owner[0].id, user_id="ann")  # delivered twice

    assert not UsageRecord.objects.filter(user_id="ann").exists()
    assert not UsageErasure.objects.exists()
    assert services.usage_erasures_sweep() == 0


def test_an_erasure_leaves_no_admin_log_entry_with_the_users_words(http, owner, people):
    """The admin's history keeps each row's str() as it was edited or deleted: a memory's text,
    a message's words. An erasure deletes those entries, of rows deleted before it too."""
    from django.contrib.admin.models import CHANGE, DELETION, LogEntry
    from django.contrib.auth.models import User

    from memory.models import Memory, Message
    from memory.services import memory_delete

    root = User.objects.create_superuser("root", "root@example.com", "pw")
    tea = Memory.objects.get(user_id="alice", text="Alice likes tea.")
    rows = [*Memory.objects.filter(user_id="alice"), *Message.objects.filter(user_id="alice")]
    LogEntry.objects.log_actions(root.pk, rows, CHANGE)
    LogEntry.objects.log_actions(root.pk, [tea], DELETION, single_object=True)
    memory_delete(workspace=owner[0], memory=tea, actor="admin")  # deleted before
    bob = Memory.objects.get(user_id="bob")
    LogEntry.objects.log_actions(root.pk, [bob], CHANGE, single_object=True)

    assert http.delete("/v1/users/alice").status_code == 200

    words = ("Oslo", "tea", "Hello", "Bye")
    assert not [
        e.object_repr for e in LogEntry.objects.all() if any(w in e.object_repr for w in words)
    ]
    kept = {e.object_repr for e in LogEntry.objects.all()}  # another user's, another workspace's
    assert kept == {"Bob lives in Bergen.", "Other Alice lives in Rome."}


def test_a_deleted_memory_or_conversation_leaves_no_admin_log_entry_with_its_words(
    http, owner, people
):
    """A memory edited in the admin, then deleted through the API, kept its text in the admin's
    history (`django_admin_log.object_repr`); so did a deleted conversation's title and
    messages. A person's deletion deletes the entries of what it deletes."""
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.auth.models import User

    from memory.models import Conversation, Memory, Message
    from memory.services import memory_create

    root = User.objects.create_superuser("root", "root@example.com", "pw")
    Conversation.objects.filter(external_id="c-alice").update(title="Moving to Oslo")
    moved = Message.objects.get(user_id="alice", content="I moved to Oslo")
    memory_create(  # goes with the conversation, its only source
        workspace=owner[0], user_id="alice", text="Alice moved.", source_message_ids=[moved.id]
    )
    rows = [
        *Memory.objects.filter(user_id__in=("alice", "bob")),
        *Message.objects.filter(user_id="alice"),
        *Conversation.objects.filter(user_id="alice"),
    ]
    LogEntry.objects.log_actions(root.pk, rows, CHANGE)
    tea = Memory.objects.get(user_id="alice", text="Alice likes tea.")

    assert http.delete(f"/v1/memories/{tea.id}").status_code == 200
    deleted = http.delete("/v1/conversations/c-alice")
    assert deleted.status_code == 200 and deleted.json()["counts"]["memories"] == 1

    kept = {e.object_repr for e in LogEntry.objects.all()}
    # not deleted: her other memory, bob's, the other workspace's alice's
    assert kept == {"Alice lives in Oslo.", "Bob lives in Bergen.", "Other Alice lives in Rome."}


def test_an_edited_memory_leaves_no_admin_log_entry_with_its_old_text(http, owner, people):
    """A person's edit of a memory's text replaces the fact; the admin's history kept the text
    replaced (`object_repr`). The entries of that memory go; an edit of its kind alone, or of
    another memory, keeps them."""
    from django.contrib.admin.models import CHANGE, LogEntry
    from django.contrib.auth.models import User

    from memory.models import Memory

    root = User.objects.create_superuser("root", "root@example.com", "pw")
    rows = list(Memory.objects.filter(user_id__in=("alice", "bob")))
    LogEntry.objects.log_actions(root.pk, rows, CHANGE)
    tea = Memory.objects.get(user_id="alice", text="Alice likes tea.")
    bob = Memory.objects.get(user_id="bob")

    assert http.patch(f"/v1/memories/{bob.id}", json={"kind": "preference"}).status_code == 200
    edited = http.patch(f"/v1/memories/{tea.id}", json={"text": "Alice likes coffee."})
    assert edited.status_code == 200 and edited.json()["text"] == "Alice likes coffee."

    kept = {e.object_repr for e in LogEntry.objects.all()}  # the other workspace's alice too
    assert kept == {"Alice lives in Oslo.", "Bob lives in Bergen.", "Other Alice lives in Rome."}


def test_a_user_of_an_agent_with_memory_off_is_listed_read_and_counted(
    sdk, http, upstream, tool_server, owner
):
    """An agent whose memory is off stores no conversation, but its tool runs keep the user's
    messages (GET /v1/executions/{id}), which DELETE /v1/users/{id} erases: the user was missing
    from GET /v1/users and GET /v1/users/{id} was 404, so they could not find their data."""
    from tests.test_tools import ask, engram, make_tool, script_call_then_answer
    from tests.upstream import tool_call

    agent = http.post(
        "/v1/agents",
        json={"name": "forgetful", "model": "gpt-4o-mini", "memory": {"enabled": False}},
    ).json()["id"]
    make_tool(http, agent, tool_server.url + "/weather")
    script_call_then_answer(upstream, tool_call("call_1", "weather", {"city": "Oslo"}))
    answer = ask(sdk, agent, text="Weather in Oslo?", user="erin")
    assert http.get(f"/v1/executions/{engram(answer)['execution_id']}").status_code == 200
    assert not Conversation.objects.filter(user_id="erin").exists()
    _remember(http, "alice", "Alice lives in Oslo.")

    listed = http.get("/v1/users", params={"order": "asc"}).json()
    assert [u["id"] for u in listed["data"]] == ["alice", "erin"]
    erin = listed["data"][1]
    assert erin["counts"] == {"memories": 0, "conversations": 0, "messages": 0}
    assert isinstance(erin["last_active_at"], int)
    one = http.get("/v1/users/erin")
    assert one.status_code == 200, one.text
    assert one.json()["counts"]["executions"] == 1
    assert http.get("/v1/users/alice").json()["counts"]["executions"] == 0
    # the cursor steps over them as over any user
    after = http.get("/v1/users", params={"order": "asc", "after": "alice"}).json()
    assert [u["id"] for u in after["data"]] == ["erin"]

    # ...and their export holds the run: their turn, the tool's result and the answer
    export = http.get("/v1/users/erin/export").json()
    [run] = export["executions"]
    assert run["id"] == engram(answer)["execution_id"] and run["user_id"] == "erin"
    roles = [m["role"] for m in run["messages"]]
    assert roles[0] == "user" and "tool" in roles and "system" not in roles
    assert run["messages"][0]["content"] == "Weather in Oslo?"
    assert http.get("/v1/users/alice/export").json()["executions"] == []

    assert http.delete("/v1/users/erin").json()["counts"]["executions"] == 1
    assert http.get("/v1/users/erin").status_code == 404
    assert [u["id"] for u in http.get("/v1/users").json()["data"]] == ["alice"]


def test_export_reads_the_runs_approvals_in_a_fixed_number_of_queries(owner, outsider):
    """A user's export read each agent run's approvals with a query of its own: 1,000 runs
    were 1,000 queries. Prefetched, the count is the same for 1 run as for 5, and each run
    still lists its own approvals, oldest first."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    workspace = owner[0]
    runs_with_approvals(workspace, user_id="one", n=1)
    runs_with_approvals(workspace, user_id="five", n=5)
    runs_with_approvals(outsider[0], user_id="five", n=2)  # another workspace's user of the same id

    with CaptureQueriesContext(connection) as one:
        assert len(user_export(workspace, "one")["executions"]) == 1
    with CaptureQueriesContext(connection) as five:
        export = user_export(workspace, "five")

    assert len(five.captured_queries) == len(one.captured_queries)
    assert len(export["executions"]) == 5
    for i, run in enumerate(export["executions"]):
        calls = [a["tool_call_ids"] for a in run["approvals"]]
        assert calls == [[f"call_b_{i}"], [f"call_a_{i}"]]


def _conversations_with_messages(workspace, user_id: str, n: int, *, tag: str = "") -> None:
    """n conversations of 3 messages, two at the same moment (their id breaks the tie), a
    session on the first, created newest conversation first and messages out of order."""
    from datetime import timedelta

    from django.utils import timezone

    from memory.models import Message

    moment = timezone.now()
    for i in reversed(range(n)):
        conversation = Conversation.objects.create(
            workspace=workspace, external_id=f"{user_id}-c{i}", user_id=user_id
        )
        session = Session.objects.create(
            workspace=workspace, external_id=f"{user_id}-s{i}", user_id=user_id
        )
        for n_, (role, at, text) in enumerate(
            [("assistant", 1, "Later"), ("user", 0, "Tied b"), ("user", 0, "Tied a")]
        ):
            Message.objects.create(
                id=f"msg_{tag}{user_id}_{i}_{'zba'[n_]}",
                workspace=workspace,
                conversation=conversation,
                session=session if role == "user" else None,
                user_id=user_id,
                role=role,
                content=f"{text} {i}",
                raw={"role": role, "content": [{"type": "text", "text": f"{text} {i}"}]}
                if at
                else {},
                created_at=moment + timedelta(seconds=at + i),
            )


def test_export_reads_the_conversations_messages_in_a_fixed_number_of_queries(owner, outsider):
    """A user's export read each conversation's messages with a query of its own: 10,000
    conversations were 10,000 queries. One query now reads them all, the count the same for 1
    conversation as for 5, and each conversation's messages are what its own query gave, in
    its order (created_at, then id)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    from memory.selectors import conversation_list, message_list
    from memory.serializers import message_body

    workspace = owner[0]
    _conversations_with_messages(workspace, "one", 1)
    _conversations_with_messages(workspace, "five", 5)
    _conversations_with_messages(outsider[0], "five", 2, tag="x")  # another workspace's user

    with CaptureQueriesContext(connection) as one:
        assert len(user_export(workspace, "one")["conversations"]) == 1
    with CaptureQueriesContext(connection) as five:
        export = user_export(workspace, "five")
    assert len(five.captured_queries) == len(one.captured_queries)

    expected = [
        [message_body(m, c) for m in message_list(workspace=workspace, conversation=c)]
        for c in conversation_list(workspace=workspace, user_id="five").order_by("id")
    ]
    exported = export["conversations"]
    assert [c["messages"] for c in exported] == expected
    assert sorted(c["external_id"] for c in exported) == [f"five-c{i}" for i in range(5)]
    for conversation in exported:
        i = conversation["external_id"][-1]
        texts = [
            m["content"] if isinstance(m["content"], str) else "raw"
            for m in conversation["messages"]
        ]
        assert texts == [f"Tied a {i}", f"Tied b {i}", "raw"]
        assert [m["session_id"] for m in conversation["messages"]] == [f"five-s{i}"] * 2 + [None]
