"""The broker connection Celery makes for each Redis URL scheme: kombu's transport for it, with
Engram's guard (config.celery.BrokerConnection), its TLS parameters kombu's own, its URI the
URL's. No server: a real one per scheme is in tests/test_faults_kills.py."""

from __future__ import annotations

import ssl

import pytest
import redis
from kombu.transport import redis as kombu_redis

from config.celery import RedisTransport, SentinelTransport, app

CA = "/etc/engram/redis-ca.pem"


def _channel_params(connection) -> dict:
    """The redis-py connection parameters the connection's channel would open its pool with
    (kombu's Channel._connparams), without connecting: a channel's __init__ pings Redis."""
    transport = connection.transport
    channel = object.__new__(transport.Channel)
    channel.connection = transport
    return channel._connparams()


@pytest.mark.parametrize(
    ("url", "kombus", "ours"),
    [
        ("redis://:secret@broker:6379/0", kombu_redis.Transport, RedisTransport),
        ("rediss://:secret@broker:6380/0", kombu_redis.Transport, RedisTransport),
        (
            "sentinel://:secret@s1:26379;sentinel://s2:26379",
            kombu_redis.SentinelTransport,
            SentinelTransport,
        ),
    ],
)
def test_each_redis_scheme_gets_kombu_s_transport_guarded_and_its_uri_names_the_scheme(
    url, kombus, ours
):
    connection = app.connection_for_write(url)
    assert type(connection.transport) is ours and issubclass(ours, kombus)
    scheme = url.split("://", 1)[0]
    assert connection.transport_cls == scheme  # kombu's own choice, by the URL's scheme
    # What the worker's start line (config.celery._banner_logged) and Celery's "Connected to"
    # say: the URL's scheme, its password masked (was `config.celery:RedisTransport://`).
    uri = connection.as_uri()
    assert uri.startswith(f"{scheme}://") and "secret" not in uri, uri
    assert type(connection.clone().transport) is ours  # the pools' connections are clones


def test_a_rediss_broker_keeps_broker_use_ssl_and_the_released_channel_fails_as_unreachable(
    monkeypatch,
):
    """broker_use_ssl reaches redis-py (a TLS connection verifying the server against its CA)
    through the guarded transport; once the transport is released (Redis lost) the channel's
    parameters fail as a connection error, which every cleanup path ignores."""
    monkeypatch.setitem(
        app.conf, "broker_use_ssl", {"ssl_cert_reqs": ssl.CERT_REQUIRED, "ssl_ca_certs": CA}
    )
    connection = app.connection_for_write("rediss://broker:6380/0")
    params = _channel_params(connection)
    assert issubclass(params["connection_class"], redis.SSLConnection)
    assert params["ssl_cert_reqs"] == ssl.CERT_REQUIRED and params["ssl_ca_certs"] == CA
    assert (params["host"], params["port"]) == ("broker", 6380)
    connection.transport.client = None  # released, as the consumer's collect does
    with pytest.raises(redis.ConnectionError):
        _channel_params(connection)


def test_a_rediss_broker_without_ssl_options_still_speaks_tls():
    """kombu's default for the scheme (TLS, with a warning that the certificate is not
    verified) holds: it is set only when the transport is chosen by the scheme, which the
    settings' CELERY_BROKER_TRANSPORT replaced (plain TCP to a TLS port)."""
    connection = app.connection_for_write("rediss://broker:6380/0")
    params = _channel_params(connection)
    assert issubclass(params["connection_class"], redis.SSLConnection)
    assert params["ssl_cert_reqs"] == ssl.CERT_NONE


def test_a_sentinel_channel_released_fails_as_redis_unreachable():
    connection = app.connection_for_write(
        "sentinel://s1:26379", transport_options={"master_name": "engram"}
    )
    assert _channel_params(connection)["host"] == "s1"
    connection.transport.client = None
    with pytest.raises(redis.ConnectionError):
        _channel_params(connection)
