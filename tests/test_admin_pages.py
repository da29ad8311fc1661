"""The admin for operators: every page renders with readable names, usage totals, the end-user
pages (list, delete, export), login by email, and static files served by the app itself."""

from __future__ import annotations

import json
import re
import time

import httpx
import pytest
from django.contrib import admin
from django.contrib.auth.models import Group, User
from django.urls import reverse

from accounts.endusers.models import Issuer
from accounts.limits.models import CreditUnit, Limit
from accounts.models import ApiKey, Workspace
from completions.agents.models import Agent
from completions.agents.services import agent_create
from completions.models import ModelAlias, Price, ProviderCredential, UsageRecord
from memory.background.titles import conversation_title_generate
from memory.models import (
    Chunk,
    Collection,
    Conversation,
    Document,
    Memory,
    MemoryEvent,
    Message,
    ProcessingJob,
    Session,
)
from memory.services import conversation_get_or_create, memory_create, messages_append
from memory.services.conversations import session_resolve
from memory.text import title_from
from tests.factories import make_workspace, paused_tool_run

FIRST_QUESTION = (
    "Could you help me plan a three week cycling trip through the Pyrenees next summer "
    "with my sister?"
)
ZERO = [0.0] * 384


@pytest.fixture
def admin_client(client, db):
    user = User.objects.create_superuser("root", "root@example.com", "pw")
    client.force_login(user)
    return client


def _chat(workspace, user_id: str, external_id: str, text: str) -> Conversation:
    conversation, _ = conversation_get_or_create(
        workspace=workspace, external_id=external_id, user_id=user_id
    )
    session = session_resolve(
        workspace=workspace, conversation=conversation, user_id=user_id, external_id=None
    )
    messages_append(
        workspace=workspace,
        conversation=conversation,
        session=session,
        messages=[{"role": "user", "content": text}, {"role": "assistant", "content": "Sure."}],
    )
    return conversation


@pytest.fixture
def world(db):
    """Two workspaces; alice and bob in the first, another alice in the second."""
    workspace, _ = make_workspace("acme")
    other, _ = make_workspace("globex")
    key = ApiKey.objects.get(workspace=workspace)
    conversation = _chat(workspace, "alice", "auto:1f3a", FIRST_QUESTION)
    conversation_title_generate(conversation_id=conversation.id)
    conversation.refresh_from_db()
    _chat(workspace, "bob", "auto:bob", "Bob's question")
    _chat(other, "alice", "auto:other", "The other alice")
    long_memory = "Alice is planning a long cycling trip through the Pyrenees " * 4
    memory = memory_create(workspace=workspace, user_id="alice", text=long_memory, embedding=ZERO)
    memory_create(workspace=workspace, user_id="bob", text="Bob sails.", embedding=ZERO)
    memory_create(workspace=other, user_id="alice", text="Other alice rows.", embedding=ZERO)
    job = ProcessingJob.objects.create(
        workspace=workspace,
        conversation=conversation,
        kind=ProcessingJob.Kind.EXTRACT,
        status=ProcessingJob.Status.DONE,
        upto_message_id=conversation.messages.latest("created_at").id,
    )
    collection = Collection.objects.create(workspace=workspace, name="Handbook")
    document = Document.objects.create(
        workspace=workspace, collection=collection, title="Leave policy", content_hash="h1"
    )
    for i, text in enumerate(["Everyone gets 25 days of leave.", "Carry over up to 5 days."]):
        Chunk.objects.create(
            workspace=workspace, collection=collection, document=document, chunk_index=i, text=text
        )
    Group.objects.create(name="operators")
    ProviderCredential.objects.create(workspace=workspace, provider="openai")
    ModelAlias.objects.create(workspace=workspace, alias="fast", target_model="gpt-4o-mini")
    Issuer.objects.create(
        workspace=workspace,
        issuer="https://acme.example/",
        audiences=["acme-app"],
        jwks_url="https://acme.example/.well-known/jwks.json",
        algorithms=["RS256"],
    )
    agent_create(workspace=workspace, name="support", model="fast", instructions="Be kind.")
    Limit.objects.create(workspace=workspace, subject="workspace", rpm=60, budget_credits=5)
    CreditUnit.objects.create(workspace=workspace, name="tokens", per_usd=1000)
    Price.objects.get_or_create(model="gpt-4o-mini", defaults={"output_per_million": "0.60"})
    UsageRecord.objects.create(
        workspace=workspace,
        api_key_id=key.id,
        user_id="alice",
        request_id="req_1",
        model="gpt-4o-mini",
        status_code=200,
        prompt_tokens=10,
        completion_tokens=5,
        total_tokens=15,
        latency_ms=2527.0219890001044,
    )
    paused_tool_run(
        other, agent_name="tools-agent", model="gpt-4o-mini"
    )  # its own workspace: the agent tests find one agent in the first
    return {
        "workspace": workspace,
        "other": other,
        "key": key,
        "conversation": conversation,
        "memory": memory,
        "job": job,
        "document": document,
    }


def test_an_agent_edited_in_the_admin_gets_its_next_version(admin_client, world):
    agent = Agent.objects.get(workspace=world["workspace"])
    url = reverse("admin:completions_agent_change", args=[agent.pk])
    form = {
        "name": "support",
        "instructions": "Be brief.",
        "model": "fast",
        "parameters": '{"temperature": 0.5}',
        "memory": "{}",
        "collection_ids": "[]",
        "metadata": "{}",
        "versions-TOTAL_FORMS": "1",
        "versions-INITIAL_FORMS": "1",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    refused = admin_client.post(url, {**form, "parameters": '{"temperature": 9}'})
    assert refused.status_code == 200 and b"temperature" in refused.content  # the form's error
    assert admin_client.post(url, form).status_code == 302
    agent.refresh_from_db()
    assert agent.version == 2 and agent.instructions == "Be brief."
    assert agent.memory["enabled"] is True  # the policy's defaults filled in, as the API does
    versions = list(agent.versions.values_list("version", "instructions"))
    assert versions == [(2, "Be brief."), (1, "Be kind.")]


def test_an_issuer_edited_in_the_admin_is_saved_through_the_service(admin_client, world):
    """The form hands every field to the service, "issuer" among them (a 500 before: the
    service's own argument had that name)."""
    issuer = Issuer.objects.get(workspace=world["workspace"])
    url = reverse("admin:accounts_issuer_change", args=[issuer.pk])
    form = {
        "issuer": "https://login.acme.example/",
        "audiences": '["acme-app", "acme-mobile"]',
        "jwks_url": "",  # from keys at a URL to a shared secret (a URL is resolved on save)
        "algorithms": '["HS256"]',
        "user_claim": "sub",
        "required_scope": "",
        "leeway_seconds": "30",
        "hs256_secret": "s" * 40,
    }
    refused = admin_client.post(url, {**form, "audiences": "[]"})
    assert refused.status_code == 200 and b"audience" in refused.content  # the API's rule
    saved = admin_client.post(url, form)
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    issuer.refresh_from_db()
    assert issuer.issuer == "https://login.acme.example/"
    assert issuer.audiences == ["acme-app", "acme-mobile"] and issuer.jwks_url in ("", None)
    assert issuer.hs256_secret_encrypted and "s" * 40 not in issuer.hs256_secret_encrypted


def test_titles_are_the_first_user_message_cut_at_a_word():
    assert title_from("  Hello\n  there ") == "Hello there"
    title = title_from(FIRST_QUESTION)
    assert title == "Could you help me plan a three week cycling trip through…"
    assert len(title) <= 60 and FIRST_QUESTION.startswith(title[:-1])
    assert title_from("x" * 100) == "x" * 59 + "…"


def test_every_admin_page_renders_with_readable_names(admin_client, world):
    conversation, job, key = world["conversation"], world["job"], world["key"]
    assert conversation.title == "Could you help me plan a three week cycling trip through…"
    assert str(job) == f"extraction of conversation {conversation.title}, done"
    assert str(key) == f"test ({key.prefix}…)"
    assert str(world["memory"]).endswith("…") and len(str(world["memory"])) <= 80

    for model in admin.site._registry:
        meta = model._meta
        listing = admin_client.get(reverse(f"admin:{meta.app_label}_{meta.model_name}_changelist"))
        assert listing.status_code == 200, meta.label
        assert b" object (" not in listing.content, meta.label
        obj = model._default_manager.first()
        assert obj is not None, f"no {meta.label} in the fixture"
        page = admin_client.get(
            reverse(f"admin:{meta.app_label}_{meta.model_name}_change", args=[obj.pk])
        )
        assert page.status_code == 200, meta.label
        assert b" object (" not in page.content, meta.label
        assert str(obj).encode() in page.content.replace(b"&#x27;", b"'"), meta.label

    jobs = admin_client.get(reverse("admin:memory_processingjob_changelist")).content.decode()
    assert f"extraction of conversation {conversation.title}, done" in jobs
    conversations = admin_client.get(reverse("admin:memory_conversation_changelist"))
    assert conversation.title in conversations.content.decode()
    keys = admin_client.get(reverse("admin:accounts_apikey_changelist")).content.decode()
    assert f"test ({key.prefix}…)" in keys


def test_document_page_lists_its_chunks_read_only(admin_client, world):
    page = admin_client.get(reverse("admin:memory_document_change", args=[world["document"].pk]))
    body = page.content.decode()
    assert "Everyone gets 25 days of leave." in body and "Carry over up to 5 days." in body
    assert 'name="chunks-0-text"' not in body  # shown, not editable


def test_usage_shows_tokens_and_rounded_latency_with_totals_for_the_filter(admin_client, world):
    workspace, other, key = world["workspace"], world["other"], world["key"]
    for i, latency in enumerate([100.4, 200, 300, 1000]):
        UsageRecord.objects.create(
            workspace=workspace,
            api_key_id=key.id,
            user_id="alice",
            request_id=f"req_a{i}",
            model="gpt-4o",
            status_code=200,
            prompt_tokens=100 * (i + 1),
            completion_tokens=10,
            total_tokens=100 * (i + 1) + 10,
            latency_ms=latency,
        )
    UsageRecord.objects.create(  # another end user, same model
        workspace=workspace,
        user_id="bob",
        request_id="req_b",
        model="gpt-4o",
        status_code=200,
        prompt_tokens=9999,
        latency_ms=5,
    )
    UsageRecord.objects.create(  # another workspace, same user id
        workspace=other,
        user_id="alice",
        request_id="req_o",
        model="gpt-4o",
        status_code=200,
        prompt_tokens=7777,
        latency_ms=5,
    )
    url = reverse("admin:completions_usagerecord_changelist")

    everything = admin_client.get(url)
    assert everything.status_code == 200
    assert "2527 ms" in everything.content.decode() and b"2527.02" not in everything.content
    assert everything.context["totals"]["requests"] == 7
    assert f"test ({key.prefix}…)" in everything.content.decode()

    filtered = admin_client.get(
        url, {"workspace__id__exact": workspace.id, "user": "alice", "model": "gpt-4o"}
    )
    assert filtered.status_code == 200
    totals = filtered.context["totals"]
    assert totals["requests"] == 4
    assert totals["prompt_tokens"] == 1000 and totals["completion_tokens"] == 40
    assert totals["latency_mean"] == 400  # (100.4 + 200 + 300 + 1000) / 4, rounded
    assert totals["latency_p95"] == 895  # 300 + 0.85 * 700, PostgreSQL's percentile_cont
    body = filtered.content.decode()
    assert '<td class="requests">4</td>' in body and '<td class="latency-p95">895 ms</td>' in body
    assert '<td class="credits">' in body and '<td class="latency-p50">' in body

    by_key = admin_client.get(url, {"key": key.id})
    assert by_key.context["totals"]["requests"] == 5  # alice's four and the fixture's one
    today = UsageRecord.objects.earliest("created_at").created_at
    by_day = admin_client.get(
        url,
        {
            "created_at__year": today.year,
            "created_at__month": today.month,
            "created_at__day": today.day,
        },
    )
    assert by_day.status_code == 200 and by_day.context["totals"]["requests"] == 7


def test_end_users_are_listed_per_workspace_with_counts(admin_client, world):
    index = admin_client.get(reverse("admin:index")).content.decode()
    assert reverse("admin:memory_enduser_changelist") in index and "End users" in index
    listing = admin_client.get(reverse("admin:memory_enduser_changelist"))
    users = {(u["workspace_id"], u["user_id"]): u for u in listing.context["page"]}
    assert set(users) == {
        (world["workspace"].id, "alice"),
        (world["workspace"].id, "bob"),
        (world["other"].id, "alice"),
    }
    alice = users[(world["workspace"].id, "alice")]
    assert (alice["memories"], alice["conversations"], alice["sessions"]) == (1, 1, 1)
    only_other = admin_client.get(
        reverse("admin:memory_enduser_changelist"), {"workspace": world["other"].id}
    )
    assert [u["user_id"] for u in only_other.context["page"]] == ["alice"]


def test_an_end_user_whose_memories_were_all_deleted_is_listed_while_their_history_is_kept(
    admin_client, world
):
    """Their deleted memories' texts stay in the history until they are erased: the list left
    them out, so the admin could not find them to export or erase."""
    from memory.services import memory_create, memory_delete

    memory = memory_create(workspace=world["workspace"], user_id="erin", text="Erin has diabetes.")
    memory_delete(workspace=world["workspace"], memory=memory)
    listing = admin_client.get(reverse("admin:memory_enduser_changelist"))
    users = {(u["workspace_id"], u["user_id"]): u for u in listing.context["page"]}
    erin = users[(world["workspace"].id, "erin")]
    assert (erin["memories"], erin["memory_events"]) == (0, 2)


def test_an_end_user_of_an_agent_with_memory_off_is_listed_and_their_runs_counted(
    admin_client, world
):
    """An agent with memory off stores no conversation, but its runs keep the user's messages
    (and the erasure deletes them): the list left such a user out, so the admin could not find
    them to export or erase."""
    from completions.tools.models import Execution
    from memory.admin_users import user_url

    workspace = world["workspace"]
    for user_id in ("erin", "erin", ""):  # two runs of erin's, one anonymous
        Execution.objects.create(
            workspace=workspace, agent_id="agent:off", user_id=user_id, model="m", route_model="m"
        )
    listing = admin_client.get(reverse("admin:memory_enduser_changelist"))
    users = {(u["workspace_id"], u["user_id"]): u for u in listing.context["page"]}
    assert (workspace.id, "") not in users
    erin = users[(workspace.id, "erin")]
    assert (erin["memories"], erin["conversations"], erin["executions"]) == (0, 0, 2)
    assert erin["last_active"] is not None
    confirm = admin_client.get(user_url(workspace.id, "erin") + "delete/")
    assert "2 agent runs" in confirm.content.decode()
    assert admin_client.post(user_url(workspace.id, "erin") + "delete/").status_code == 302
    assert not Execution.objects.filter(user_id="erin").exists()


def test_end_user_page_shows_their_rows(admin_client, world):
    from memory.admin_users import user_url

    page = admin_client.get(user_url(world["workspace"].id, "alice"))
    body = page.content.decode()
    assert page.status_code == 200
    assert world["conversation"].title in body and str(world["memory"]) in body
    assert "Bob sails." not in body and "Other alice rows." not in body
    odd = admin_client.get(user_url(world["workspace"].id, "no/such_user:x"))
    assert odd.status_code == 200 and "no/such_user:x" in odd.content.decode()


def test_end_user_delete_asks_first_then_removes_that_users_data_only(admin_client, world):
    from memory.admin_users import user_url

    workspace, other = world["workspace"], world["other"]
    delete_url = user_url(workspace.id, "alice") + "delete/"
    confirm = admin_client.get(delete_url)
    assert confirm.status_code == 200 and "Yes, delete all their data" in confirm.content.decode()
    assert Memory.objects.filter(workspace=workspace, user_id="alice").exists()

    done = admin_client.post(delete_url)
    assert done.status_code == 302
    for model in (Memory, Conversation, Session, Message, MemoryEvent):
        assert not model.objects.filter(workspace=workspace, user_id="alice").exists(), model
        assert model.objects.filter(workspace=workspace, user_id="bob").exists(), model
        assert model.objects.filter(workspace=other, user_id="alice").exists(), model


def test_end_user_delete_counts_in_words(admin_client, world):
    """The confirmation asked about "their 1 memories" and the message after it listed
    "1 memories, 1 memory_events, ... 0 usage_records_pseudonymized": the service's keys."""
    from memory.admin_users import user_url
    from memory.services import memory_create

    memory_create(workspace=world["workspace"], user_id="solo", text="Solo rows.", actor="api")
    delete_url = user_url(world["workspace"].id, "solo") + "delete/"
    asked = " ".join(admin_client.get(delete_url).content.decode().split())
    assert "their 1 memory (and its history), 0 conversations" in asked
    assert "1 memories" not in asked

    done = admin_client.post(delete_url, follow=True).content.decode()
    assert "Deleted everything stored about solo: 1 memory, 1 memory event, 0 messages," in done
    assert "_" not in done.split("Deleted everything stored about solo:")[1].split("</li>")[0]


def test_end_user_export_is_their_memories_as_json(admin_client, world):
    from memory.admin_users import user_url

    response = admin_client.get(user_url(world["workspace"].id, "alice") + "export/")
    assert response.status_code == 200 and "attachment" in response["Content-Disposition"]
    assert response.streaming  # the test client reads it through (a warning: it is async)
    body = json.loads(b"".join(response))
    assert body["user_id"] == "alice"
    assert [m["text"] for m in body["memories"]] == [world["memory"].text]
    assert [c["id"] for c in body["conversations"]] == [world["conversation"].id]
    # a user with nothing stored (erased since the page was opened): the admin's 404
    nobody = admin_client.get(user_url(world["workspace"].id, "nobody") + "export/")
    assert nobody.status_code == 404


def test_non_staff_cannot_open_end_user_pages(client, world):
    from memory.admin_users import user_url

    User.objects.create_user("eve", "eve@example.com", "pw")
    client.login(username="eve", password="pw")
    response = client.post(user_url(world["workspace"].id, "alice") + "delete/")
    assert response.status_code == 302 and "/admin/login/" in response["Location"]
    assert Memory.objects.filter(workspace=world["workspace"], user_id="alice").exists()


def test_login_form_asks_for_the_email_and_accepts_it(client, db):
    User.objects.create_superuser("root", "Root@Example.com", "pw")
    login = client.get(reverse("admin:login")).content.decode()
    assert '<label for="id_username" class="required">Email:</label>' in login
    assert "Engram admin" in login
    signed_in = client.post(
        reverse("admin:login"),
        {"username": "root@example.com", "password": "pw", "next": "/admin/"},
    )
    assert signed_in.status_code == 302 and signed_in["Location"] == "/admin/"
    index = client.get("/admin/").content.decode()
    assert "View site" not in index and "Engram admin" in index
    client.logout()
    wrong = client.post(reverse("admin:login"), {"username": "root@example.com", "password": "x"})
    assert wrong.status_code == 200 and "_auth_user_id" not in client.session
    # it said "the correct username and password" under a box labelled Email
    refusal = str(wrong.context["form"].non_field_errors())
    assert "correct email and password" in refusal and "username" not in refusal


def test_an_untitled_conversation_is_titled_by_a_worker(transactional_db, celery_worker):
    workspace, _ = make_workspace()
    conversation = _chat(workspace, "alice", "auto:abc", FIRST_QUESTION)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        conversation.refresh_from_db()
        if conversation.title:
            break
        time.sleep(0.1)
    assert conversation.title == title_from(FIRST_QUESTION)
    assert str(conversation) == conversation.title


def test_titles_are_enqueued_on_commit_only_while_untitled(db, django_capture_on_commit_callbacks):
    workspace, _ = make_workspace()
    conversation, _ = conversation_get_or_create(
        workspace=workspace, external_id="c", user_id="alice"
    )
    with django_capture_on_commit_callbacks() as callbacks:
        messages_append(
            workspace=workspace,
            conversation=conversation,
            session=None,
            messages=[{"role": "assistant", "content": "Hello, how can I help?"}],
        )
    assert callbacks == []  # no user message yet: nothing to title from
    Conversation.objects.filter(pk=conversation.pk).update(title="Typed by an operator")
    conversation.refresh_from_db()
    with django_capture_on_commit_callbacks() as callbacks:
        messages_append(
            workspace=workspace,
            conversation=conversation,
            session=None,
            messages=[{"role": "user", "content": "A question"}],
        )
    assert callbacks == []
    assert conversation_title_generate(conversation_id=conversation.id) == "A question"
    conversation.refresh_from_db()
    assert conversation.title == "Typed by an operator"  # never overwritten


def test_static_files_are_served_by_the_asgi_app(engram_server):
    with httpx.Client(base_url=engram_server.url, timeout=30) as client:
        css = client.get("/static/admin/css/base.css")
        assert css.status_code == 200
        assert css.headers["content-type"].startswith("text/css")
        assert "--header-bg" in css.text
        head = client.head("/static/admin/css/base.css")
        assert head.status_code == 200 and head.content == b""
        missing = client.get("/static/admin/css/nope.css")
        assert missing.status_code == 404


def _http_tool(workspace, agent_name: str):
    from completions.tools import services as tools

    agent = agent_create(workspace=workspace, name=agent_name, model="gpt-4o-mini")
    values = {
        "name": "crm",
        "type": "http",
        "http": {
            "url": "https://crm.example.com/lookup",
            "method": "POST",
            "headers": {"Authorization": "Bearer acme-crm-secret"},
        },
    }
    return agent, tools.tool_create(workspace=workspace, agent_id=agent.id, values=values)


def test_a_tool_stays_with_its_workspace_and_agent_when_edited_in_the_admin(admin_client, world):
    """The change form let the operator pick another workspace and agent: the tool, with the
    first tenant's encrypted CRM header, became the other tenant's agent's."""
    from completions.tools import services as tools
    from completions.tools.models import Tool

    workspace, other = world["workspace"], world["other"]
    agent, tool = _http_tool(workspace, "acme-crm")
    foreign_agent = Agent.objects.get(workspace=other)
    url = reverse("admin:completions_tool_change", args=[tool.pk])
    form = {
        "workspace": other.pk,
        "agent": foreign_agent.pk,
        "name": "crm",
        "description": "Looks a customer up.",
        "parameters": "{}",
        "kind": "http",
        "builtin": "",
        "http_url": "https://crm.example.com/lookup",
        "http_method": "POST",
        "approval": '"never"',
        "approval_ttl_seconds": "900",
        "timeout_seconds": "10",
        "headers": "",
    }
    saved = admin_client.post(url, form)
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    tool = Tool.objects.get(pk=tool.pk)
    assert (tool.workspace_id, tool.agent_id) == (workspace.pk, agent.pk)
    assert tool.description == "Looks a customer up."  # the editable fields are saved
    assert tools.headers_of(tool) == {"Authorization": "Bearer acme-crm-secret"}
    assert not Tool.objects.filter(agent=foreign_agent, name="crm").exists()


def test_a_tool_moved_to_another_host_in_the_admin_needs_its_headers_again(admin_client, world):
    """Blank headers keep the stored ones, but not for another host: the operator's form sent
    the tenant's secret wherever its URL field was changed to."""
    from completions.tools import services as tools
    from completions.tools.models import Tool

    agent, tool = _http_tool(world["workspace"], "acme-crm")
    url = reverse("admin:completions_tool_change", args=[tool.pk])
    form = {
        "name": "crm",
        "description": "",
        "parameters": "{}",
        "kind": "http",
        "builtin": "",
        "http_url": "https://collector.example.net/lookup",
        "http_method": "POST",
        "approval": '"never"',
        "approval_ttl_seconds": "900",
        "timeout_seconds": "10",
        "headers": "",
    }
    refused = admin_client.post(url, form)
    assert refused.status_code == 200
    assert "headers" in refused.context["adminform"].form.errors
    tool = Tool.objects.get(pk=tool.pk)
    assert tool.http_url == "https://crm.example.com/lookup"
    same_host = {**form, "http_url": "https://crm.example.com/v2/lookup"}
    assert admin_client.post(url, same_host).status_code == 302
    assert tools.headers_of(Tool.objects.get(pk=tool.pk)) == {
        "Authorization": "Bearer acme-crm-secret"
    }


def test_tools_deleted_together_in_the_admin_leave_no_cached_tool(admin_client, world):
    """The list's "Delete selected" skipped the service: the agent's cached tools kept the
    deleted one (its calls went on until the cache expired)."""
    from completions.tools import cache
    from completions.tools.models import Tool
    from completions.tools.selectors import agent_tools

    workspace = world["workspace"]
    agent, tool = _http_tool(workspace, "acme-crm")
    key = (workspace.pk, agent.pk)
    cached = cache._tools.get(
        key, lambda: tuple(agent_tools(workspace=workspace.pk, agent_id=agent.pk))
    )
    assert [t.pk for t in cached] == [tool.pk]  # what a call of the agent reads
    done = admin_client.post(
        reverse("admin:completions_tool_changelist"),
        {"action": "delete_selected", "_selected_action": [tool.pk], "post": "yes"},
    )
    assert done.status_code == 302
    assert not Tool.objects.filter(pk=tool.pk).exists()
    assert cache._tools.peek(key) == (False, None)  # the next call reloads: no deleted tool


def test_end_user_page_of_a_heavy_user_shows_the_latest_rows_with_links_to_all(
    admin_client, world, django_assert_max_num_queries
):
    """A user with thousands of memories got every one on the page, and each session cost a
    query for its conversation: the page timed out. Now each kind shows its latest rows and
    links to its full list, filtered to the user; the queries do not grow with the rows."""
    from memory.admin_users import user_url

    workspace, SHOWN = world["workspace"], 100  # rows of each kind on the page
    Memory.objects.bulk_create(
        Memory(workspace=workspace, user_id="carol", text=f"Carol fact {i}.", kind="fact")
        for i in range(SHOWN + 20)
    )
    for i in range(30):
        conversation = Conversation.objects.create(
            workspace=workspace, user_id="carol", external_id=f"c{i}"
        )
        Session.objects.create(
            workspace=workspace, user_id="carol", external_id=f"s{i}", conversation=conversation
        )
    with django_assert_max_num_queries(15):
        page = admin_client.get(user_url(workspace.id, "carol"))
    assert page.status_code == 200
    memories = page.context["memories"]
    assert memories["count"] == SHOWN + 20 and len(memories["rows"]) == SHOWN
    assert page.context["sessions"]["count"] == 30 and len(page.context["sessions"]["rows"]) == 30
    body = page.content.decode()
    assert f"All {SHOWN + 20} memories" in body and "All 30 sessions" not in body
    everything = admin_client.get(memories["all_url"])
    assert everything.status_code == 200
    assert everything.context["cl"].result_count == SHOWN + 20  # carol's, in this workspace only


def _change_form_data(page) -> dict:
    """What the change page would post as it stands: its form's values and its inlines'
    management forms and rows."""
    form = page.context["adminform"].form
    data = {}
    for name, field in form.fields.items():
        value = form[name].value()
        data[name] = field.widget.format_value(value) if value is not None else ""
        if isinstance(value, (dict, list)):
            data[name] = json.dumps(value)
    for inline in page.context["inline_admin_formsets"]:
        management = inline.formset.management_form
        for name in management.fields:
            data[f"{management.prefix}-{name}"] = management[name].value()
        for inline_form in inline.formset.forms:  # their rows' hidden ids
            for name in inline_form.fields:
                value = inline_form[name].value()
                data[inline_form.add_prefix(name)] = "" if value is None else str(value)
    return {k: v for k, v in data.items() if v is not None}


@pytest.mark.parametrize("model", [Conversation, Session])
def test_a_conversation_its_sessions_and_messages_keep_their_owner_in_the_admin(
    admin_client, world, model
):
    """The change forms let an operator pick another workspace or user for a conversation (a
    session, a message): it showed up in the other tenant's API while its messages, memories
    and jobs stayed behind, and the first user's erasure no longer found it."""
    workspace, other = world["workspace"], world["other"]
    row = model.objects.filter(workspace=workspace, user_id="alice").first()
    url = reverse(f"admin:memory_{model._meta.model_name}_change", args=[row.pk])
    page = admin_client.get(url)
    data = _change_form_data(page)
    data.update(workspace=other.pk, user_id="mallory")
    saved = admin_client.post(url, data)
    assert saved.status_code == 302, saved.context["adminform"].form.errors
    row.refresh_from_db()
    assert (row.workspace_id, row.user_id) == (workspace.pk, "alice")


@pytest.mark.parametrize(
    "page, action", [("memory", "delete_with_history"), ("conversation", "delete_with_derived")]
)
def test_the_delete_actions_ask_first(admin_client, world, page, action):
    """Choosing "Delete selected memories" (or conversations) and Go deleted them at once: no
    confirmation page, where Django's own delete action and each row's Delete ask first."""
    row = world[page]
    model = type(row)
    url = reverse(f"admin:memory_{page}_changelist")
    chosen = {"action": action, "_selected_action": [row.pk], "index": "0"}
    asked = admin_client.post(url, chosen)
    assert asked.status_code == 200
    body = asked.content.decode()
    assert "Are you sure" in body and f'name="action" value="{action}"' in body
    assert model.objects.filter(pk=row.pk).exists()

    done = admin_client.post(url, {**chosen, "post": "yes"})
    assert done.status_code == 302
    assert not model.objects.filter(pk=row.pk).exists()
    if page == "memory":  # through the service: its history says so
        assert MemoryEvent.objects.filter(memory_id=row.pk, event="DELETE").exists()


def test_a_staff_user_who_may_only_view_cannot_run_the_actions(client, world):
    """Custom actions named no permission, so Django offered them to anyone who could open the
    list: a view-only operator revoked a production key, deleted memories and conversations and
    re-ran ingestion."""
    from django.contrib.auth.models import Permission

    viewer = User.objects.create_user("viewer", "viewer@example.com", "pw", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename__startswith="view_"))
    client.force_login(viewer)
    workspace, key, document = world["workspace"], world["key"], world["document"]
    conversation, memory = world["conversation"], world["memory"]
    actions = [
        ("accounts_apikey", "revoke", key.pk),
        ("memory_memory", "delete_with_history", memory.pk),
        ("memory_conversation", "delete_with_derived", conversation.pk),
        ("memory_document", "rerun", document.pk),
        ("memory_document", "rerun_from_scratch", document.pk),
    ]
    for page, action, pk in actions:
        url = reverse(f"admin:{page}_changelist")
        listed = client.get(url)
        assert listed.status_code == 200  # they may look
        form = listed.context["action_form"]  # None when no action is offered
        offered = [name for name, _ in form.fields["action"].choices] if form else []
        assert action not in offered, page
        client.post(url, {"action": action, "_selected_action": [pk], "index": "0"})
    key.refresh_from_db()
    assert key.revoked_at is None
    assert Memory.objects.filter(pk=memory.pk).exists()
    assert Conversation.objects.filter(pk=conversation.pk).exists()
    assert Document.objects.get(pk=document.pk).status == document.status
    assert Memory.objects.filter(workspace=workspace, user_id="alice").exists()


def _reads_uploads(queries) -> bool:
    return any(
        q["sql"].lstrip().startswith("SELECT") and '"raw"' in q["sql"] and "document" in q["sql"]
        for q in queries
    )


@pytest.mark.parametrize("page", ["collection", "document", "workspace"])
def test_deleting_a_collection_document_or_workspace_counts_what_goes_without_loading_it(
    admin_client, world, page
):
    """The "Are you sure?" page listed every related row, loading each document's uploaded
    bytes and each chunk to print its name (a collection of some size timed the page out), and
    the deletion skipped the service (a collection's agents kept searching it)."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    document = world["document"]
    Document.objects.filter(pk=document.pk).update(raw=b"x" * 100_000)
    obj = {
        "collection": document.collection,
        "document": document,
        "workspace": world["workspace"],
    }[page]
    app = "accounts" if page == "workspace" else "memory"
    url = reverse(f"admin:{app}_{page}_delete", args=[obj.pk])
    with CaptureQueriesContext(connection) as confirming:
        confirm = admin_client.get(url)
    assert confirm.status_code == 200
    assert dict(confirm.context["model_count"])["chunks"] == 2  # counted, not listed
    assert not _reads_uploads(confirming.captured_queries)
    with CaptureQueriesContext(connection) as deleting:
        done = admin_client.post(url, {"post": "yes"})
    assert done.status_code == 302
    if page == "workspace":  # marked; a worker deletes its rows (accounts.services)
        from accounts.services import workspace_delete_run

        assert Workspace.objects.get(pk=obj.pk).deleted_at is not None
        with CaptureQueriesContext(connection) as deleting:
            assert workspace_delete_run(workspace_id=obj.pk)
    assert not type(obj).objects.filter(pk=obj.pk).exists()
    assert not Chunk.objects.filter(document_id=document.pk).exists()
    assert not _reads_uploads(deleting.captured_queries)


def test_usage_records_cannot_be_deleted_in_the_admin(admin_client, world):
    """The read-only usage page offered "Delete selected usage records": what budgets and
    GET /v1/usage count could be erased from the list."""
    record = UsageRecord.objects.get(workspace=world["workspace"])
    url = reverse("admin:completions_usagerecord_changelist")
    listed = admin_client.get(url)
    form = listed.context["action_form"]  # None when no action is offered
    assert form is None or "delete_selected" not in dict(form.fields["action"].choices)
    admin_client.post(
        url, {"action": "delete_selected", "_selected_action": [record.pk], "post": "yes"}
    )
    delete_url = reverse("admin:completions_usagerecord_delete", args=[record.pk])
    assert admin_client.post(delete_url, {"post": "yes"}).status_code == 403
    assert UsageRecord.objects.filter(pk=record.pk).exists()


def test_erasing_an_end_user_in_the_admin_needs_leave_to_delete_everything_it_deletes(
    client, world
):
    """The erasure asked for leave to delete memories only: a staff user who could not delete
    a conversation, a message or a session erased all of the user's."""
    from django.contrib.auth.models import Permission

    from memory.admin_users import user_url

    staff = User.objects.create_user("mod", "mod@example.com", "pw", is_staff=True)
    staff.user_permissions.set(
        Permission.objects.filter(codename__startswith="view_")
        | Permission.objects.filter(codename="delete_memory")
    )
    client.force_login(staff)
    workspace = world["workspace"]
    assert client.get(user_url(workspace.id, "alice")).status_code == 200  # they may look
    assert client.post(user_url(workspace.id, "alice") + "delete/").status_code == 403
    assert Conversation.objects.filter(workspace=workspace, user_id="alice").exists()
    assert Message.objects.filter(workspace=workspace, user_id="alice").exists()


def test_the_end_user_list_reads_one_page_of_users_from_the_database(admin_client, world):
    """Every page of the list grouped every user of every workspace in Python (1.2 s a page at
    50,000 users, growing with them); now the database groups, orders and pages them."""
    from django.db import connection

    from memory.admin_users import PER_PAGE

    workspace = world["workspace"]
    Memory.objects.bulk_create(
        Memory(workspace=workspace, user_id=f"cust{i:03}", text="A fact.", kind="fact")
        for i in range(PER_PAGE + 50)
    )
    fetched: list[int] = []

    def rows_read(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if sql.lstrip().upper().startswith("SELECT") and "memory_memory" in sql:
            fetched.append(context["cursor"].rowcount)
        return result

    with connection.execute_wrapper(rows_read):
        second = admin_client.get(reverse("admin:memory_enduser_changelist"), {"p": "2"})
    page = second.context["page"]
    assert page.paginator.count == PER_PAGE + 50 + 3  # and alice, bob, the other alice
    assert len(page.object_list) == 53
    assert max(fetched) <= PER_PAGE  # a page's rows, not every user's
    listed = {u["user_id"]: u for u in page.object_list}
    assert listed["cust000"]["memories"] == 1 and listed["cust000"]["conversations"] == 0


@pytest.mark.parametrize(
    "page, params",
    [
        ("admin:completions_usagerecord_changelist", {"user": "ali\x00ce"}),
        ("admin:completions_usagerecord_changelist", {"key": "key_\x00"}),
        ("admin:memory_enduser_changelist", {"q": "ali\x00"}),
        ("admin:memory_enduser_changelist", {"workspace": "ws_\x00"}),
    ],
)
def test_a_nul_in_the_admins_own_filters_is_refused_rather_than_a_500(
    admin_client, world, page, params
):
    # a 400, as on every admin page (config.admin.EngramAdminSite.admin_view)
    response = admin_client.get(reverse(page), params)
    assert response.status_code == 400


def test_a_keys_limit_in_the_admin_is_saved_only_in_the_keys_workspace(
    admin_client, world, settings
):
    """A limit saved under another workspace than its key's never applied (the request path reads
    it in the key's own workspace), and held the key's one limit: the provisioning API's PATCH
    of that key's limits then failed on the unique constraint, a 500."""
    from django.test import Client

    workspace, other = world["workspace"], world["other"]
    foreign_key = ApiKey.objects.get(workspace=other)
    form = {
        "workspace": workspace.pk,
        "subject": "api_key",
        "api_key": foreign_key.pk,
        "rpm": "10",
        "budget_period": "month",
    }
    refused = admin_client.post(reverse("admin:limits_limit_add"), form)
    assert refused.status_code == 200 and b"belongs to another workspace" in refused.content
    assert not Limit.objects.filter(api_key=foreign_key).exists()
    operator = Client(headers={"Authorization": f"Bearer {settings.ENGRAM_ADMIN_KEY}"})
    patched = operator.patch(
        f"/v1/workspaces/{other.pk}/api_keys/{foreign_key.pk}",
        {"limits": {"rpm": 30}},
        content_type="application/json",
    )
    assert patched.status_code == 200, patched.content
    assert Limit.objects.get(api_key=foreign_key).workspace_id == other.pk


def test_an_agent_naming_another_workspaces_collection_is_refused_on_the_form(admin_client, world):
    """The service refused the collection at save, and the admin answered with a bare 404
    instead of the form and its error."""
    agent = Agent.objects.get(workspace=world["workspace"])
    foreign = Collection.objects.create(workspace=world["other"], name="Their handbook")
    url = reverse("admin:completions_agent_change", args=[agent.pk])
    form = {
        "name": "support",
        "instructions": "Be kind.",
        "model": "fast",
        "parameters": "{}",
        "memory": "{}",
        "collection_ids": f'["{foreign.pk}"]',
        "metadata": "{}",
        "versions-TOTAL_FORMS": "1",
        "versions-INITIAL_FORMS": "1",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    refused = admin_client.post(url, form)
    assert refused.status_code == 200
    errors = refused.context["adminform"].form.errors
    assert "collection_ids" in errors and foreign.pk in str(errors["collection_ids"])
    own = world["document"].collection
    saved = admin_client.post(url, {**form, "collection_ids": f'["{own.pk}"]'})
    assert saved.status_code == 302
    agent.refresh_from_db()
    assert agent.collection_ids == [own.pk] and agent.version == 2


def _add_key_form(client) -> dict[str, str]:
    """The add-API-key form's one-time token, as the page gives it out."""
    page = client.get(reverse("admin:accounts_apikey_add")).content.decode()
    token = re.search(r'name="form_token" value="([^"]+)"', page)
    return {"form_token": token.group(1)} if token else {}


def _sessions_text() -> str:
    """Every server-side session row, decoded: what a reader of the database gets."""
    from django.contrib.sessions.models import Session as WebSession

    rows = list(WebSession.objects.all())
    assert rows  # the admin client's own session is one
    return "".join(row.session_data + json.dumps(row.get_decoded()) for row in rows)


def test_a_key_made_in_the_admin_is_shown_on_the_answer_and_never_in_a_cookie(admin_client, world):
    """The new key was a message for the next page, which Django keeps in a cookie: the raw
    key travelled in a readable `messages` cookie."""
    from accounts.authentication import resolve_sync

    made = admin_client.post(
        reverse("admin:accounts_apikey_add"),
        {"workspace": world["other"].pk, "name": "ci", **_add_key_form(admin_client)},
    )
    assert made.status_code == 200 and "no-store" in made["Cache-Control"]
    raw_key = made.context["raw_key"]
    assert raw_key.startswith("sk-") and raw_key in made.content.decode()
    principal = resolve_sync(raw_key)  # the key shown is the key made, and it works
    assert principal is not None and principal.workspace.pk == world["other"].pk
    cookies = "".join(morsel.OutputString() for morsel in made.cookies.values())
    assert raw_key[3:15] not in cookies and "messages" not in made.cookies
    assert (
        raw_key
        not in admin_client.get(reverse("admin:accounts_apikey_changelist")).content.decode()
    )


def test_a_new_key_form_sent_again_makes_no_second_key_nor_shows_the_secret(admin_client, world):
    """The key was shown on the answer to the add form's POST: a reload of it (or Back then
    Forward) posted the form again and made a second key, its secret shown."""
    form = {"workspace": world["other"].pk, "name": "ci", **_add_key_form(admin_client)}
    url = reverse("admin:accounts_apikey_add")
    made = admin_client.post(url, form)
    keys = ApiKey.objects.filter(workspace=world["other"], name="ci")
    assert keys.count() == 1
    raw_key = made.context["raw_key"]
    assert raw_key.startswith("sk-") and raw_key in made.content.decode()

    again = admin_client.post(url, form)  # what a reload sends
    assert keys.count() == 1, "the form sent again made a second key"
    assert again.status_code == 200 and "no-store" in again["Cache-Control"]
    page = again.content.decode()
    assert raw_key not in page and raw_key[3:15] not in page and "shown once" in page
    assert reverse("admin:accounts_apikey_change", args=[keys.get().pk]) in page
    thrice = admin_client.post(url, form).content.decode()  # and again: the same
    assert raw_key not in thrice and "shown once" in thrice and keys.count() == 1


def test_a_new_keys_secret_is_never_kept_in_the_session(admin_client, world, monkeypatch):
    """The secret waited in the server-side session, in plain text in the database (where keys
    are hashed), for a GET after the POST: for weeks if that GET never came."""
    from accounts import services

    made = []
    create = services.api_key_create
    monkeypatch.setattr(
        services, "api_key_create", lambda **kw: made.append(create(**kw)) or made[-1]
    )
    form = {"workspace": world["other"].pk, "name": "ci", **_add_key_form(admin_client)}
    admin_client.post(reverse("admin:accounts_apikey_add"), form)
    assert len(made) == 1
    raw_key = made[0].raw_key
    assert raw_key not in _sessions_text() and raw_key[3:15] not in _sessions_text()
    admin_client.post(reverse("admin:accounts_apikey_add"), form)  # sent again
    admin_client.get(reverse("admin:accounts_apikey_changelist"))
    assert raw_key not in _sessions_text() and raw_key[3:15] not in _sessions_text()


@pytest.mark.parametrize("token", [None, "", "never-given-out"])
def test_a_new_key_form_without_its_token_makes_nothing(admin_client, world, token):
    """A send of the add form must carry a token this session was given: without one, a form
    sent again could not be told from a new one."""
    _add_key_form(admin_client)  # one given out, not this one
    form = {"workspace": world["other"].pk, "name": "ci"}
    refused = admin_client.post(
        reverse("admin:accounts_apikey_add"),
        form if token is None else {**form, "form_token": token},
    )
    assert refused.status_code == 200 and "raw_key" not in refused.context
    assert "nothing was made" in str(refused.context["adminform"].form.non_field_errors())
    assert not ApiKey.objects.filter(name="ci").exists()
    fresh = re.search(r'name="form_token" value="([^"]+)"', refused.content.decode())
    assert fresh is not None  # the form shown again carries a token of its own, which makes it
    saved = admin_client.post(
        reverse("admin:accounts_apikey_add"), {**form, "form_token": fresh.group(1)}
    )
    assert saved.context["raw_key"].startswith("sk-")
    assert ApiKey.objects.filter(name="ci").count() == 1


def test_a_new_key_form_refused_on_save_can_be_sent_again(admin_client, world):
    """A form refused (no workspace) and then its page reloaded: the reload is refused the same
    way, not taken for a key made."""
    url = reverse("admin:accounts_apikey_add")
    form = {"workspace": "", "name": "ci", **_add_key_form(admin_client)}
    for _ in range(2):
        refused = admin_client.post(url, form)
        assert refused.status_code == 200 and refused.context["adminform"].form.errors["workspace"]
    assert not ApiKey.objects.filter(name="ci").exists()
    saved = admin_client.post(url, {**form, "workspace": world["other"].pk})  # its token, unused
    assert saved.context["raw_key"].startswith("sk-")


def test_two_sends_of_one_new_key_form_at_once_make_one_key(admin_client, world):
    """Two sends at once (a double-click) both load the session before either saves it: the
    second still finds the token unused there."""
    from django.contrib.sessions.models import Session as WebSession

    url = reverse("admin:accounts_apikey_add")
    form = {"workspace": world["other"].pk, "name": "ci", **_add_key_form(admin_client)}
    row = WebSession.objects.get(session_key=admin_client.session.session_key)
    before = row.session_data
    assert admin_client.post(url, form).context["raw_key"]
    WebSession.objects.filter(pk=row.pk).update(session_data=before)  # as the second one saw it
    second = admin_client.post(url, form)
    assert "raw_key" not in second.context or second.context["raw_key"] is None
    assert ApiKey.objects.filter(workspace=world["other"], name="ci").count() == 1


def test_a_new_key_is_made_in_the_admin_while_redis_is_away(admin_client, world, monkeypatch):
    """The form's one-time token is claimed in Redis (two sends at once make one key); with
    Redis away the claim raised, and the admin could make no key at all (a 500), though making
    one needs the database only. A reload still makes nothing (the session says so)."""
    import redis
    from django.core.cache import cache

    def away(*args, **kwargs):
        raise redis.ConnectionError("Error 111 connecting to Redis. Connection refused.")

    monkeypatch.setattr(cache, "add", away)
    monkeypatch.setattr(cache, "delete", away)
    url = reverse("admin:accounts_apikey_add")
    form = {"workspace": world["other"].pk, "name": "ci", **_add_key_form(admin_client)}
    made = admin_client.post(url, form)
    assert made.status_code == 200 and made.context["raw_key"].startswith("sk-")
    again = admin_client.post(url, form)
    assert again.status_code == 200 and "shown once" in again.content.decode()
    assert ApiKey.objects.filter(workspace=world["other"], name="ci").count() == 1
    refused = admin_client.post(url, {**_add_key_form(admin_client), "workspace": "", "name": "x"})
    assert refused.status_code == 200 and refused.context["adminform"].form.errors["workspace"]


def test_a_message_cannot_be_edited_in_the_admin(admin_client, world):
    """An edit of a message's content left its search text, embeddings and the body the client
    sent (returned by the user's export) as they were: a "redaction" there stayed searchable
    and exported."""
    message = Message.objects.filter(workspace=world["workspace"], user_id="alice").first()
    url = reverse("admin:memory_message_change", args=[message.pk])
    page = admin_client.get(url)
    assert page.status_code == 200 and "content" not in page.context["adminform"].form.fields
    posted = admin_client.post(url, {"content": "[redacted]", "role": "user"})
    assert posted.status_code == 403
    message.refresh_from_db()
    assert message.content == FIRST_QUESTION


@pytest.mark.parametrize(
    "admin_url, form, field",
    [
        (
            "admin:completions_price_add",
            {"model": "m", "input_per_million": "-1", "output_per_million": "1"},
            "input_per_million",
        ),
        (
            "admin:completions_price_add",
            {"model": "m", "input_per_million": "1", "output_per_million": "-0.5"},
            "output_per_million",
        ),
        (
            "admin:completions_price_add",
            {
                "model": "m",
                "input_per_million": "1",
                "cached_input_per_million": "-1",
                "output_per_million": "1",
            },
            "cached_input_per_million",
        ),
        (
            "admin:completions_price_add",
            {
                "model": "m",
                "input_per_million": "1",
                "cache_write_per_million": "-1.25",
                "output_per_million": "1",
            },
            "cache_write_per_million",
        ),
        ("admin:limits_creditunit_add", {"name": "credits", "per_usd": "0"}, "per_usd"),
        ("admin:limits_creditunit_add", {"name": "credits", "per_usd": "-100"}, "per_usd"),
        ("admin:limits_creditunit_add", {"name": "credits", "per_usd": "1e13"}, "per_usd"),
        (
            "admin:limits_limit_add",
            {"subject": "workspace", "budget_credits": "-5", "budget_period": "month"},
            "budget_credits",
        ),
    ],
)
def test_the_admin_takes_no_price_or_credit_the_api_refuses(
    admin_client, world, admin_url, form, field
):
    """A negative price gave credits back to every budget and made /metrics' credits counter
    raise after the upstream had answered (a 500 for every request on that model); a credit
    unit of 0 made every answer free. The API refused them, the admin took them."""
    before = (Price.objects.count(), CreditUnit.objects.count(), Limit.objects.count())
    form = {"workspace": world["workspace"].pk, **form}
    refused = admin_client.post(reverse(admin_url), form)
    assert refused.status_code == 200
    assert field in refused.context["adminform"].form.errors
    assert (Price.objects.count(), CreditUnit.objects.count(), Limit.objects.count()) == before


def test_a_credit_unit_changed_in_the_admin_counts_the_budgets_again(admin_client, world):
    """As the API's (tests/test_limits.py): a new per_usd in the admin restarts every budget
    count of the workspace (a new Redis key, seeded from the usage records converted to the
    new unit); the admin's save kept the old count, in the old unit."""
    workspace = world["workspace"]
    budget, _ = Limit.objects.update_or_create(
        workspace=workspace,
        subject="workspace",
        api_key=None,
        defaults={"budget_credits": 10, "budget_period": "day"},
    )
    unit, _ = CreditUnit.objects.update_or_create(
        workspace=workspace, defaults={"name": "credits", "per_usd": 1}
    )
    form = {"workspace": workspace.pk, "name": "credits"}
    url = reverse("admin:limits_creditunit_change", args=[unit.pk])
    assert admin_client.post(url, {**form, "per_usd": "1"}).status_code == 302
    budget.refresh_from_db()
    kept = budget.budget_since  # the same unit: the count goes on
    assert admin_client.post(url, {**form, "per_usd": "2"}).status_code == 302
    budget.refresh_from_db()
    assert budget.budget_since is not None and budget.budget_since != kept
    kept = budget.budget_since
    deleted = admin_client.post(
        reverse("admin:limits_creditunit_delete", args=[unit.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 302  # back to 1 credit per USD
    budget.refresh_from_db()
    assert budget.budget_since != kept


def test_a_session_in_the_admin_names_only_a_conversation_of_its_own_workspace_and_user(
    admin_client, world
):
    """A session added with another workspace's conversation (or another user's) was saved: a
    turn naming that session then read and wrote the other tenant's conversation."""
    workspace, other = world["workspace"], world["other"]
    theirs = Conversation.objects.get(workspace=other, user_id="alice")
    bobs = Conversation.objects.get(workspace=workspace, user_id="bob")
    form = {"workspace": workspace.pk, "external_id": "s-linked", "user_id": "alice"}
    for foreign, words in ((theirs, b"another workspace"), (bobs, b"another user")):
        refused = admin_client.post(
            reverse("admin:memory_session_add"), {**form, "conversation": foreign.pk}
        )
        assert refused.status_code == 200 and words in refused.content
    assert not Session.objects.filter(external_id="s-linked").exists()
    own = Conversation.objects.get(workspace=workspace, user_id="alice")
    saved = admin_client.post(reverse("admin:memory_session_add"), {**form, "conversation": own.pk})
    assert saved.status_code == 302
    assert Session.objects.get(external_id="s-linked").conversation_id == own.pk


def _taken_meanwhile(monkeypatch, module, service_name: str, **twin) -> None:
    """`module.service_name` (a service a ModelAdmin saves through) finds its row's name taken by
    another request between the form's checks and the save, as a race does: the same service
    makes the `twin` row first, then the admin's call runs."""
    service = getattr(module, service_name)

    def racing(*args, **kwargs):
        service(workspace=kwargs["workspace"], **twin)
        return service(*args, **kwargs)

    monkeypatch.setattr(module, service_name, racing)


def test_a_refusal_at_save_is_an_error_on_the_admins_form(admin_client, world, monkeypatch):
    """A domain error raised as the service saves (here a name another request took after the
    form's checks) replaced the operator's page with a bare JSON `{"error": ...}` (an agent),
    or (an issuer) redirected to the list with the refusal beside "was added successfully" for
    an issuer that was never saved. Now the page comes back with the refusal on the form."""
    from accounts.endusers import admin as issuers_admin
    from completions.agents import admin as agents_admin

    workspace = world["workspace"]
    _taken_meanwhile(
        monkeypatch, agents_admin.services, "agent_create", name="billing", model="gpt-4o-mini"
    )
    agent_form = {
        "workspace": workspace.pk,
        "name": "billing",
        "instructions": "",
        "model": "gpt-4o-mini",
        "parameters": "{}",
        "memory": "{}",
        "collection_ids": "[]",
        "metadata": "{}",
        "versions-TOTAL_FORMS": "0",
        "versions-INITIAL_FORMS": "0",
        "versions-MIN_NUM_FORMS": "0",
        "versions-MAX_NUM_FORMS": "1000",
    }
    _taken_meanwhile(
        monkeypatch,
        issuers_admin.services,
        "issuer_create",
        issuer="https://b.example/",
        audiences=["a"],
        hs256_secret="s" * 40,
    )
    issuer_form = {
        "workspace": workspace.pk,
        "issuer": "https://b.example/",
        "audiences": '["a"]',
        "jwks_url": "",
        "algorithms": '["HS256"]',
        "user_claim": "sub",
        "required_scope": "",
        "leeway_seconds": "0",
        "hs256_secret": "s" * 40,
    }
    for url, form, field, message in [
        ("admin:completions_agent_add", agent_form, "name", "already exists"),
        ("admin:accounts_issuer_add", issuer_form, "issuer", "already trusts"),
    ]:
        page = admin_client.post(reverse(url), form)
        assert page.status_code == 200, page.content[:300]
        assert page["content-type"].startswith("text/html")
        errors = page.context["adminform"].form.errors
        assert message in " ".join(errors.get(field, [])), errors
        assert b"successfully" not in page.content
        assert message.encode() in page.content  # shown on the page, beside the field
    # the refused saves rolled back, the race's own rows with them (one transaction here)
    assert not Agent.objects.filter(workspace=workspace, name="billing").exists()
    assert not Issuer.objects.filter(workspace=workspace, issuer="https://b.example/").exists()


def test_a_refusal_at_save_on_a_change_form_keeps_the_row_as_it_was(
    admin_client, world, monkeypatch
):
    """The same on a change form: renamed to a name another request took meanwhile, the agent
    page showed a bare JSON 400; now the change form again, the agent unchanged."""
    from completions.agents import admin as agents_admin

    workspace = world["workspace"]
    agent = Agent.objects.get(workspace=workspace)
    update, create = agents_admin.services.agent_update, agents_admin.services.agent_create

    def racing(**kwargs):
        create(workspace=workspace, name="renamed", model="gpt-4o-mini")
        return update(**kwargs)

    monkeypatch.setattr(agents_admin.services, "agent_update", racing)
    url = reverse("admin:completions_agent_change", args=[agent.pk])
    data = _change_form_data(admin_client.get(url))
    page = admin_client.post(url, {**data, "name": "renamed"})
    assert page.status_code == 200 and page["content-type"].startswith("text/html")
    assert "already exists" in " ".join(page.context["adminform"].form.errors["name"])
    assert b"already exists" in page.content and b'"error"' not in page.content
    agent.refresh_from_db()
    assert (agent.name, agent.version) == ("support", 1)


def test_every_engram_admin_shows_refusals_at_save_on_its_form():
    from config.admin_save import RefusalsOnTheForm

    ours = {
        model._meta.label: type(model_admin).__name__
        for model, model_admin in admin.site._registry.items()
        if model._meta.app_label not in ("auth", "contenttypes", "sessions", "admin")
    }
    assert len(ours) > 15
    missing = [
        label
        for model, model_admin in admin.site._registry.items()
        if (label := model._meta.label) in ours and not isinstance(model_admin, RefusalsOnTheForm)
    ]
    assert missing == []


def test_a_limit_the_constraints_refuse_is_said_as_what_to_do(admin_client, world):
    """An API-key limit without its key, a key on a workspace limit, a second workspace limit:
    the form read "Constraint “api_key_iff_key_subject” is violated." or "Constraint
    “one_limit_per_workspace_subject” is violated.", names of the schema, not what to change."""
    workspace = world["workspace"]
    key = ApiKey.objects.filter(workspace=workspace).first()
    base = {"workspace": workspace.pk, "rpm": "10", "budget_period": "month"}
    url = reverse("admin:limits_limit_add")
    Limit.objects.filter(workspace=workspace).delete()
    assert admin_client.post(url, {**base, "subject": "workspace"}).status_code == 302

    for form, said in (
        ({**base, "subject": "api_key"}, "A limit of an API key names the key."),
        (
            {**base, "subject": "end_user", "api_key": key.pk},
            "Only a limit of an API key names one: leave it empty.",
        ),
        (
            {**base, "subject": "workspace"},
            "This workspace has a limit for “Workspace” already: change that one.",
        ),
    ):
        refused = admin_client.post(url, form)
        assert refused.status_code == 200
        page = refused.content.decode()
        assert said in page and "violated" not in page, form
    assert Limit.objects.filter(workspace=workspace).count() == 1
    limit = Limit.objects.get(workspace=workspace)
    change = reverse("admin:limits_limit_change", args=[limit.pk])
    assert (
        admin_client.post(change, {**base, "subject": "workspace", "rpm": "20"}).status_code == 302
    )
    limit.refresh_from_db()
    assert limit.rpm == 20


def test_a_budget_edited_in_the_admin_counts_again_only_when_set_again(admin_client, world):
    """As the API: a budget's count (named by Limit.budget_since) starts again when the budget
    is set where there was none or moves to another period, not for a new rate or amount."""
    workspace = world["workspace"]
    Limit.objects.filter(workspace=workspace).delete()
    base = {"workspace": workspace.pk, "subject": "workspace", "budget_period": "month"}
    assert admin_client.post(reverse("admin:limits_limit_add"), base).status_code == 302
    limit = Limit.objects.get(workspace=workspace)
    assert limit.budget_since is None  # no budget, nothing to count
    change = reverse("admin:limits_limit_change", args=[limit.pk])

    def saved(**fields):
        assert admin_client.post(change, base | fields).status_code == 302
        limit.refresh_from_db()
        return limit.budget_since

    since = saved(budget_credits="10")
    assert since is not None
    assert saved(budget_credits="20", rpm="5") == since
    moved = saved(budget_credits="20", budget_period="day")
    assert moved > since
    assert saved(budget_credits="", budget_period="day") == moved  # removed: counts nothing
    assert saved(budget_credits="20", budget_period="day") > moved


@pytest.mark.parametrize("user_id", [".", ".."])
def test_an_end_user_named_with_dots_is_reached_from_the_list(admin_client, world, user_id):
    """The API takes "." and ".." as user ids; their links read /admin/memory/users/<ws>/../,
    which a browser resolves to the list (or the workspace's): their page, their export and
    their deletion were out of reach."""
    from urllib.parse import urljoin

    workspace = world["workspace"]
    memory_create(workspace=workspace, user_id=user_id, text="Dotted rows.", embedding=ZERO)
    listing = reverse("admin:memory_enduser_changelist")
    body = admin_client.get(listing, {"q": user_id}).content.decode()
    base = "http://testserver" + listing
    hrefs = {urljoin(base, href) for href in re.findall(r'href="([^"]+)"', body)}
    pages = [h for h in hrefs if h.startswith(base + workspace.pk + "/")]
    assert len(pages) == 1, pages  # resolved as a browser does (RFC 3986 dot segments)
    page = admin_client.get(pages[0].removeprefix("http://testserver"))
    assert page.status_code == 200 and "Dotted rows." in page.content.decode()
    export = admin_client.get(pages[0].removeprefix("http://testserver") + "export/")
    assert json.loads(b"".join(export))["user_id"] == user_id
