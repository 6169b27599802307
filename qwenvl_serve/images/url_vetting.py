"""Which image URLs the server may fetch: pure checks, no DNS and no sockets.

A URL is fetched only if its scheme is http(s), it has no credentials, its host is
a plain host name or a canonical IP literal, the host is allowed by the domain list,
and every address it resolves to is globally routable. Addresses that only look
global but carry a private IPv4 inside (IPv4-mapped, 6to4, NAT64, Teredo) are judged
by the IPv4 address they carry.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

import httpx

from qwenvl_serve.images.rejections import Reason, RefusalError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_HOST_LABELS = re.compile(
    r"^[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*$"
)
# One part of an inet_aton() spelling: hex (0x..), octal (0..) or decimal.
_INET_ATON_PART = re.compile(r"^(0[xX][0-9a-fA-F]*|0[0-7]*|[1-9][0-9]*)$")
# DNS limits (RFC 1035): resolvers refuse longer names, so they are refused up front.
_MAX_LABEL = 63
_MAX_NAME = 253
_NAT64_PREFIXES = (
    ipaddress.IPv6Network("64:ff9b::/96"),
    ipaddress.IPv6Network("64:ff9b:1::/48"),
)
# Not routable, though Python 3.11's ``is_global`` calls them global.
_EXTRA_NON_GLOBAL = (
    ipaddress.IPv4Network("192.0.0.0/24"),
    ipaddress.IPv4Network("192.88.99.0/24"),
    ipaddress.IPv6Network("fec0::/10"),  # deprecated site-local, still routed on some LANs
)
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")
DEFAULT_PORTS = {"http": 80, "https": 443}


@dataclass(frozen=True)
class UrlTarget:
    """A vetted URL: where to connect and what to call the host (Host header, SNI)."""

    url: httpx.URL
    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, lower case, no trailing dot
    port: int
    address: IPAddress | None  # set when the URL names an IP literal


def parse_url(url: str, allowed_domains: tuple[str, ...]) -> UrlTarget:
    """Check everything about ``url`` that needs no DNS; refuse what may not be fetched."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, ValueError):
        raise RefusalError(Reason.BAD_IMAGE_URL) from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise RefusalError(Reason.BAD_IMAGE_URL)
    if parsed.userinfo or not parsed.raw_host:
        raise RefusalError(Reason.BAD_IMAGE_URL)
    port = parsed.port or DEFAULT_PORTS[parsed.scheme]
    if not 1 <= port <= 65535:
        raise RefusalError(Reason.BAD_IMAGE_URL)
    host = parsed.raw_host.decode("ascii").lower().rstrip(".")
    address = _ip_literal(host)
    if address is None and not _is_host_name(host):
        raise RefusalError(Reason.BAD_IMAGE_URL)
    if not domain_allowed(host, allowed_domains):
        raise RefusalError(Reason.URL_DOMAIN_REFUSED)
    return UrlTarget(parsed, parsed.scheme, host, port, address)


def _is_host_name(host: str) -> bool:
    """A syntactically valid DNS name, within DNS's length limits."""
    return (
        len(host) <= _MAX_NAME
        and all(len(label) <= _MAX_LABEL for label in host.split("."))
        and _HOST_LABELS.match(host) is not None
    )


def _ip_literal(host: str) -> IPAddress | None:
    """The address a host spells, or None for a host name.

    Only the canonical forms are taken (dotted quad, bracketed IPv6 without a zone);
    other numeric spellings (``2130706433``, ``0x7f.1``, ``0177.0.0.1``, ``127.1``)
    are refused outright: resolvers disagree about them.
    """
    if ":" in host:
        try:
            address = ipaddress.IPv6Address(host)
        except ValueError:
            raise RefusalError(Reason.BAD_IMAGE_URL) from None
        if address.scope_id is not None:  # a zone names a local interface
            raise RefusalError(Reason.BAD_IMAGE_URL)
        return address
    spelled = inet_aton_address(host)
    if spelled is None:
        return None
    if str(spelled) != host:
        raise RefusalError(Reason.URL_ADDRESS_REFUSED)
    return spelled


def inet_aton_address(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address ``host`` denotes under inet_aton() rules, if it is one."""
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_INET_ATON_PART.match(p) for p in parts):
        return None
    values = [
        # A bare "0x" is 0, as glibc's inet_aton reads it.
        int(p[2:] or "0", 16) if p[:2].lower() == "0x" else int(p, 8 if p[0] == "0" else 10)
        for p in parts
    ]
    if any(v > 255 for v in values[:-1]) or values[-1] >= 256 ** (5 - len(values)):
        return None
    number = values[-1]
    for index, value in enumerate(values[:-1]):
        number += value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def domain_allowed(host: str, allowed_domains: tuple[str, ...]) -> bool:
    """True when no list is set, ``host`` is listed, or a ``*.suffix`` entry covers it."""
    if not allowed_domains:
        return True
    for pattern in allowed_domains:
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]):
                return True
        elif host == pattern:
            return True
    return False


def embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, compatible, 6to4, NAT64, Teredo)."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    packed = address.packed
    if any(address in prefix for prefix in _NAT64_PREFIXES):
        return ipaddress.IPv4Address(packed[-4:])
    if address in _IPV4_COMPATIBLE and int(address) > 1:
        return ipaddress.IPv4Address(packed[-4:])
    return None


def address_allowed(address: IPAddress, allow_loopback: bool = False) -> bool:
    """True for an address the server may connect to: globally routable unicast."""
    if isinstance(address, ipaddress.IPv6Address):
        if allow_loopback and address.is_loopback:
            return True
        inner = embedded_ipv4(address)
        if inner is not None:
            return address_allowed(inner, allow_loopback=False)
    elif allow_loopback and address.is_loopback:
        return True
    if any(address in network for network in _EXTRA_NON_GLOBAL):
        return False
    return address.is_global and not (
        address.is_multicast
        or address.is_reserved
        or address.is_loopback
        or address.is_link_local
        or address.is_unspecified
        or address.is_private
    )


def vet_addresses(addresses: list[IPAddress], allow_loopback: bool) -> IPAddress:
    """The address to connect to; refused unless every resolved address is allowed
    (a name that mixes public and private answers is not trusted)."""
    if not addresses or not all(address_allowed(a, allow_loopback) for a in addresses):
        raise RefusalError(Reason.URL_ADDRESS_REFUSED)
    return addresses[0]
