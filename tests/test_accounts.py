"""Workspaces, keys and the provisioning API, over HTTP."""

import httpx
import pytest

from accounts.keys import key_prefix, peppered_digest
from accounts.models import ApiKey
from accounts.selectors import api_key_authenticate


def test_provisioning_round_trip(operator_http, engram_server):
    created = operator_http.post("/v1/workspaces", json={"name": "Acme"})
    assert created.status_code == 201
    workspace = created.json()
    assert workspace["name"] == "Acme" and workspace["id"].startswith("ws_")
    assert isinstance(workspace["created_at"], int)

    listed = operator_http.get("/v1/workspaces").json()
    assert listed["object"] == "list"
    assert workspace["id"] in [w["id"] for w in listed["data"]]

    key = operator_http.post(f"/v1/workspaces/{workspace['id']}/api_keys", json={"name": "ci"})
    assert key.status_code == 201
    body = key.json()
    assert body["key"].startswith("sk-") and body["prefix"] == body["key"][:12]

    keys = operator_http.get(f"/v1/workspaces/{workspace['id']}/api_keys").json()
    assert [k["id"] for k in keys["data"]] == [body["id"]]
    assert "key" not in keys["data"][0] and body["key"] not in str(keys)

    user = httpx.Client(
        base_url=engram_server.url, headers={"Authorization": f"Bearer {body['key']}"}
    )
    assert user.get("/v1/memories", params={"user_id": "u"}).status_code in (200, 404)
    assert user.get("/v1/nope").status_code == 404  # authenticated, unknown path

    revoked = operator_http.delete(f"/v1/workspaces/{workspace['id']}/api_keys/{body['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"]
    denied = user.get("/v1/nope")
    assert denied.status_code == 401
    assert denied.json()["error"]["code"] == "invalid_api_key"


def test_revocation_takes_effect_at_once(http, owner):
    from accounts.services import api_key_revoke

    workspace, raw = owner
    assert http.get("/v1/nope").status_code == 404
    key = ApiKey.objects.get(prefix=key_prefix(raw))
    api_key_revoke(workspace=workspace, key_id=key.id)
    assert http.get("/v1/nope").status_code == 401


def test_no_stored_value_authenticates(owner):
    workspace, raw = owner
    row = ApiKey.objects.get(workspace=workspace)
    assert raw not in (row.prefix, row.digest)
    assert row.digest == peppered_digest(raw)
    assert api_key_authenticate(raw_key=raw).workspace == workspace
    for stored in (row.prefix, row.digest, row.id, "sk-" + row.digest):
        assert api_key_authenticate(raw_key=stored) is None


def test_workspace_key_cannot_provision(http, owner, outsider):
    for method, path in [
        ("GET", "/v1/workspaces"),
        ("POST", "/v1/workspaces"),
        ("GET", f"/v1/workspaces/{owner[0].id}/api_keys"),
        ("POST", f"/v1/workspaces/{outsider[0].id}/api_keys"),
    ]:
        resp = http.request(method, path, json={"name": "x"})
        assert resp.status_code == 403, (method, path)
        assert resp.json()["error"]["type"] == "permission_error"


def test_key_of_one_workspace_never_revokes_another(operator_http, owner, outsider):
    key_id = ApiKey.objects.get(workspace=outsider[0]).id
    resp = operator_http.delete(f"/v1/workspaces/{owner[0].id}/api_keys/{key_id}")
    assert resp.status_code == 404
    assert ApiKey.objects.get(id=key_id).revoked_at is None


def test_last_used_at_is_recorded(http, owner):
    assert http.get("/v1/nope").status_code == 404
    assert ApiKey.objects.get(workspace=owner[0]).last_used_at is not None


@pytest.mark.django_db
def test_management_commands(capsys):
    from django.core.management import call_command

    call_command("createworkspace", "Shell Co", "--key")
    out = capsys.readouterr().out
    workspace_id = out.split("Workspace: ")[1].split()[0]
    raw = out.split("API key: ")[1].strip()
    assert api_key_authenticate(raw_key=raw).workspace.id == workspace_id
    call_command("createapikey", workspace_id, "--name", "second")
    second = capsys.readouterr().out.split("API key: ")[1].strip()
    assert api_key_authenticate(raw_key=second).workspace.id == workspace_id


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("x" * 201, "name: Ensure this field has no more than 200 characters."),
        ("a\x00b", "Invalid 'name': NUL characters are not allowed."),
        ("a\udcffb", "Invalid 'name': lone UTF-16 surrogates are not allowed."),
    ],
    ids=["201 characters", "NUL", "lone surrogate"],
)
def test_management_commands_refuse_a_name_as_the_api_does(
    capsys, operator_http, owner, name, message
):
    """A name the API refuses (400) was a traceback from the commands: a DataError from the
    database for 201 characters and for a NUL, a UnicodeEncodeError from psycopg for
    a lone surrogate (what argv's undecodable bytes become). The commands check it with the
    API's parser and serializer: the API's message, as a CommandError (exit status 1, no
    traceback), and nothing is created."""
    import json

    from django.core.management import CommandError, call_command

    from accounts.models import Workspace

    body = json.dumps({"name": name}).encode()  # ASCII: the NUL and surrogate as \u escapes
    api = operator_http.post(
        "/v1/workspaces", content=body, headers={"content-type": "application/json"}
    )
    assert api.status_code == 400 and api.json()["error"]["message"] == message
    workspaces = Workspace.objects.count()
    with pytest.raises(CommandError) as refused:
        call_command("createworkspace", name, "--key")
    assert str(refused.value) == message
    assert Workspace.objects.count() == workspaces
    keys = ApiKey.objects.filter(workspace=owner[0]).count()
    with pytest.raises(CommandError) as refused:
        call_command("createapikey", owner[0].id, "--name", name)
    assert str(refused.value) == message
    assert ApiKey.objects.filter(workspace=owner[0]).count() == keys
    assert "API key" not in capsys.readouterr().out


@pytest.mark.django_db
@pytest.mark.parametrize("workspace_id", ["w" * 201, "ws_\x00", "ws_\udcff"])
def test_createapikey_refuses_a_workspace_id_outside_the_rule(workspace_id):
    from django.core.management import CommandError, call_command

    with pytest.raises(CommandError, match="No workspace") as refused:
        call_command("createapikey", workspace_id)
    assert "\x00" not in str(refused.value)
    str(refused.value).encode("utf-8")  # printable: no lone surrogate echoed


@pytest.mark.django_db(transaction=True)
def test_deleting_a_workspace_while_a_row_of_it_is_being_written_deletes_both():
    """A usage row (or any row of the workspace) committed by another connection while the
    deletion runs: the deletion waits for it and deletes it too, instead of failing its commit
    on the foreign key (seen as a flaky test: a usage flush landed mid-deletion)."""
    from accounts.services import workspace_delete
    from completions.models import UsageRecord
    from tests.factories import deleted_while_written, make_workspace

    workspace, _ = make_workspace()
    errors = deleted_while_written(
        lambda: workspace_delete(workspace=workspace),
        "INSERT INTO completions_usagerecord (workspace_id, api_key_id, user_id, request_id,"
        " client_request_id, model, upstream_model, provider, stream, status_code, error_code,"
        " latency_ms, incomplete, agent_id, created_at)"
        " VALUES (%s, '', '', 'req_1', '', 'm', 'm', 'openai', false, 200, '', 1.0, false, '',"
        " now())",
        [workspace.id],
    )
    assert not errors
    assert not UsageRecord.objects.filter(workspace_id=workspace.id).exists()


@pytest.mark.django_db
def test_createapikey_refuses_a_deleted_workspace(capsys):
    """A workspace marked deleted (its rows being erased by a worker) was found by the command,
    and the service's refusal came out as a NotFound traceback: the operator's one-line
    "No workspace" instead, as for an id that never existed."""
    from django.core.management import CommandError, call_command

    from accounts.models import ApiKey, Workspace
    from accounts.services import workspace_delete_begin

    call_command("createworkspace", "Doomed Co")
    workspace_id = capsys.readouterr().out.split("Workspace: ")[1].split()[0]
    workspace_delete_begin(workspace=Workspace.objects.get(id=workspace_id))
    with pytest.raises(CommandError, match="No workspace"):
        call_command("createapikey", workspace_id)
    assert "API key" not in capsys.readouterr().out
    assert not ApiKey.objects.filter(workspace_id=workspace_id).exists()


def test_a_bearer_that_cannot_be_a_key_is_refused_and_not_kept(anon_http, http, owner):
    """Every bearer looked up was kept in the key cache, a refused one too, whatever its
    length: with no key at all, 300 made-up bearers of a megabyte each held 330 MB of the web
    process (10,000, the cache's size, would hold 10 GB) and pushed the real keys out."""
    from accounts.authentication import key_cache

    assert http.get("/v1/memories", params={"user_id": "u"}).status_code == 200
    assert len(key_cache) == 1  # the owner's key
    for i in range(5):
        made_up = f"{i}" + "x" * 100_000
        refused = anon_http.get("/v1/memories", headers={"Authorization": f"Bearer {made_up}"})
        assert refused.status_code == 401
        assert refused.json()["error"]["code"] == "invalid_api_key"
    unknown = anon_http.get("/v1/memories", headers={"Authorization": "Bearer sk-" + "y" * 40})
    assert unknown.status_code == 401
    assert len(key_cache) == 2  # the owner's, and the well-formed unknown key (a client's retries)
    assert http.get("/v1/memories", params={"user_id": "u"}).status_code == 200


def test_an_unknown_key_is_the_same_404_to_patch_and_delete(operator_http, owner, outsider):
    """PATCH said "No such api key." with no param, DELETE "No API key '...'." naming key_id;
    another workspace's key is unknown to both."""
    theirs = ApiKey.objects.get(workspace=outsider[0]).id
    for key_id in ("key_nope", theirs):
        url = f"/v1/workspaces/{owner[0].id}/api_keys/{key_id}"
        patched = operator_http.patch(url, json={"limits": {"rpm": 5}})
        deleted = operator_http.delete(url)
        assert patched.status_code == deleted.status_code == 404
        assert patched.json() == deleted.json()
        assert patched.json()["error"]["param"] == "key_id" and key_id in patched.text
    assert ApiKey.objects.get(id=theirs).revoked_at is None
