"""Where a URL's requests go, and whether an IP address is on the public internet: the one
rule for the requests a tenant points Engram at (agents' HTTP tools, end-user token issuers'
JWKS URLs).

An IPv6 address that carries an IPv4 one is judged by the IPv4 address it reaches: IPv4-mapped
(`::ffff:a.b.c.d`), IPv4-compatible (`::a.b.c.d`), 6to4 (`2002:…`) and NAT64's well-known
prefix (`64:ff9b::a.b.c.d`, which an IPv6-only host's translator forwards to that IPv4
address). Python counts all but the first public whatever they carry, so
`http://[64:ff9b::a9fe:a9fe]/` reached 169.254.169.254 through a NAT64 gateway.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052: the IPv4 address in the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: a network's own translator
_COMPATIBLE = ipaddress.ip_network("::/96")  # RFC 4291's deprecated IPv4-compatible form


def public(address: str) -> bool:
    """True for a global unicast address (a scoped IPv6 address's `%zone` is ignored)."""
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address = ipaddress.ip_address(
        address.split("%", 1)[0]
    )
    if isinstance(ip, ipaddress.IPv6Address):
        if ip in _NAT64_LOCAL:
            return False
        if ip in _NAT64 or ip in _COMPATIBLE:
            ip = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        else:
            ip = ip.ipv4_mapped or ip.sixtofour or ip
    return ip.is_global and not ip.is_multicast


def origin(url: str) -> tuple[str, str, int | None]:
    """Where a URL's requests go: scheme, host and port (the scheme's own when left out). A
    stored secret (a tool's headers, a provider's key) is sent only to the origin it was given
    for."""
    parts = urlsplit(url)
    port = parts.port or {"http": 80, "https": 443}.get(parts.scheme)
    return parts.scheme, (parts.hostname or "").rstrip("."), port
