"""A tool's URL is checked where every tool is written (the API's create and update, the
admin's form: completions.tools.policy.http): a host no resolver can be asked for, a port no
server listens on, whitespace or a control character were stored, and every call of the tool
then failed (a DNS or connection error the model read as the tool's answer)."""

from __future__ import annotations

import pytest

from completions.tools.models import Tool
from tests.test_errors import assert_envelope
from tests.test_tools import make_agent

BAD_URLS = [
    "http://exa mple.com/lookup",  # a space in the host
    "http:// /lookup",  # a host of one space
    "http://exa%20mple.com/lookup",  # a percent-encoded one
    "http://exa\tmple.com/",  # a tab, which urlsplit drops silently
    " https://api.example.com/",  # a leading space
    "https://api.example.com/a b",  # a space in the path (percent-encode it)
    "http://exa<mple.com/",
    'http://exa"mple.com/',
    "http://api,example.com/",
    "http://-api.example.com/",  # a label starting with -
    "http://xn--.example.com/",  # punycode that decodes to nothing
    "http://256.1.1.1/",  # a numeric last label is an IPv4 address or nothing
    "http://1.2.3.4.5/",
    "http://2130706433/",  # inet_aton's 127.0.0.1
    "http://0x7f.1/",
    "http://api.example.com:0/",  # port 0
    "http://api.example.com:65536/",
    "http://user:pw@api.example.com/",
    "http:///lookup",
    "ftp://api.example.com/",
]


# Refused before the host rule, in the words (and code) they had.
EARLIER_RULES = (
    "http://user:pw@api.example.com/",
    "http:///lookup",
    "ftp://api.example.com/",
)


@pytest.mark.parametrize("url", BAD_URLS)
def test_a_url_no_call_could_reach_is_a_400_naming_http_url(http, url):
    agent = make_agent(http)
    body = {"name": "t", "type": "http", "http": {"url": url}}
    error = assert_envelope(http.post(f"/v1/agents/{agent}/tools", json=body), 400)
    assert error["param"] == "http.url", (url, error)
    assert error["code"] == ("invalid_value" if url in EARLIER_RULES else "invalid_url"), error
    assert not Tool.objects.filter(agent_id=agent).exists()
    good = {"name": "t", "type": "http", "http": {"url": "https://api.example.com/lookup"}}
    tool = http.post(f"/v1/agents/{agent}/tools", json=good).json()
    patched = http.patch(f"/v1/agents/{agent}/tools/{tool['id']}", json={"http": {"url": url}})
    assert assert_envelope(patched, 400)["param"] == "http.url", url
    assert Tool.objects.get(id=tool["id"]).http_url == "https://api.example.com/lookup"


@pytest.mark.parametrize(
    "url",
    [
        "https://api.example.com:8443/v1/lookup?key=1#top",
        "https://api_internal.example.com/",  # an underscore: DNS names may hold one
        "https://api.example.com./",  # a fully qualified name
        "https://例え.jp/lookup",  # an internationalised name
        "https://ß.de/",  # IDNA 2008's xn--zca.de (IDNA 2003 maps it to ss.de)
        "https://xn--ls8h.la/",  # an emoji's punycode, which IDNA 2008 refuses; it resolves
        "https://8.8.8.8/lookup",
        "https://[2001:4860:4860::8888]:443/",
        "https://api.example.com/a%20b",
    ],
)
def test_urls_a_call_can_reach_are_taken(http, url):
    agent = make_agent(http)
    body = {"name": "t", "type": "http", "http": {"url": url}}
    made = http.post(f"/v1/agents/{agent}/tools", json=body)
    assert made.status_code == 201, made.text
    assert made.json()["http"]["url"] == url


def test_the_admin_refuses_what_the_api_refuses(client, owner, http):
    """Django's URLField takes port 0 and 99999; the form checks through the same parser."""
    from django.contrib.auth.models import User

    agent = make_agent(http)
    client.force_login(User.objects.create_superuser("root", "root@example.com", "pw"))
    form = {
        "workspace": owner[0].id,
        "agent": agent,
        "name": "lookup",
        "description": "",
        "parameters": "{}",
        "kind": "http",
        "builtin": "",
        "http_url": "https://api.example.com:0/lookup",
        "http_method": "POST",
        "headers": "{}",
        "approval": '"never"',
        "approval_ttl_seconds": "900",
        "timeout_seconds": "10",
    }
    refused = client.post("/admin/completions/tool/add/", form)
    assert refused.status_code == 200  # the form again, with the error
    assert "invalid port" in refused.content.decode()
    assert not Tool.objects.filter(agent_id=agent).exists()
