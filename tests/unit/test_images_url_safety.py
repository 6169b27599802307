"""SSRF safety: URL vetting (pure) and the fetcher against a real server on 127.0.0.1."""

from __future__ import annotations

import http.server
import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from qwenvl_serve.images.fetch import FetchPolicy, RemoteImageFetcher
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.images.url_vetting import (
    address_allowed,
    domain_allowed,
    inet_aton_address,
    parse_url,
)
from qwenvl_serve.sample_images import synthetic_jpeg

IMAGE = synthetic_jpeg(320, 256, seed=11)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "127.255.0.9",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",  # cloud metadata
        "100.64.0.1",  # CGNAT
        "0.0.0.0",
        "224.0.0.1",
        "239.255.255.250",
        "255.255.255.255",
        "240.0.0.1",
        "192.0.0.8",
        "198.18.0.1",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "ff02::1",
        "::ffff:127.0.0.1",  # IPv4-mapped
        "::ffff:169.254.169.254",
        "::127.0.0.1",  # IPv4-compatible
        "2002:7f00:1::",  # 6to4 of 127.0.0.1
        "2002:a9fe:a9fe::1",  # 6to4 of 169.254.169.254
        "64:ff9b::a00:1",  # NAT64 of 10.0.0.1
        "64:ff9b:1::c0a8:101",  # local-use NAT64 of 192.168.1.1
        "2001:db8::1",  # documentation
        "fec0::1",  # deprecated site-local
    ],
)
def test_non_global_addresses_are_refused(address: str):
    assert not address_allowed(ipaddress.ip_address(address))


@pytest.mark.parametrize(
    "address", ["8.8.8.8", "1.1.1.1", "2606:4700::1111", "::ffff:8.8.8.8", "64:ff9b::808:808"]
)
def test_global_addresses_are_allowed(address: str):
    assert address_allowed(ipaddress.ip_address(address))


def test_loopback_is_allowed_only_by_the_test_setting_and_nothing_else_is():
    assert address_allowed(ipaddress.ip_address("127.0.0.1"), allow_loopback=True)
    assert address_allowed(ipaddress.ip_address("::1"), allow_loopback=True)
    for other in ("10.0.0.1", "169.254.169.254", "::ffff:127.0.0.1"):
        assert not address_allowed(ipaddress.ip_address(other), allow_loopback=True)


@pytest.mark.parametrize(
    ("spelling", "address"),
    [
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0x7f.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("0xa9.0xfe.0xa9.0xfe", "169.254.169.254"),
        ("0x", "0.0.0.0"),  # a bare 0x is 0, as inet_aton reads it
        ("1.0x", "1.0.0.0"),
        ("1.2.3.4", "1.2.3.4"),
    ],
)
def test_inet_aton_spellings_are_understood(spelling: str, address: str):
    assert inet_aton_address(spelling) == ipaddress.IPv4Address(address)


@pytest.mark.parametrize("host", ["deadbeef", "example.com", "08.1.1.1", "1.2.3.4.5", "256.1.1.1"])
def test_host_names_are_not_mistaken_for_addresses(host: str):
    assert inet_aton_address(host) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://2130706433/a.jpg", Reason.URL_ADDRESS_REFUSED),
        ("http://0x7f.1/a.jpg", Reason.URL_ADDRESS_REFUSED),
        ("http://0177.0.0.1/a.jpg", Reason.BAD_IMAGE_URL),  # httpx refuses this spelling
        ("http://127.1/a.jpg", Reason.URL_ADDRESS_REFUSED),
        ("file:///etc/passwd", Reason.BAD_IMAGE_URL),
        ("ftp://example.com/a.jpg", Reason.BAD_IMAGE_URL),
        ("gopher://example.com/", Reason.BAD_IMAGE_URL),
        ("http://user:pw@example.com/a.jpg", Reason.BAD_IMAGE_URL),
        ("http:///a.jpg", Reason.BAD_IMAGE_URL),
        ("http://[fe80::1%25eth0]/a.jpg", Reason.BAD_IMAGE_URL),
        ("http://exa mple.com/a.jpg", Reason.BAD_IMAGE_URL),
        ("http://ex\\ample.com/a.jpg", Reason.BAD_IMAGE_URL),
        ("http://0x/a.jpg", Reason.URL_ADDRESS_REFUSED),
        ("http://0X.1/a.jpg", Reason.URL_ADDRESS_REFUSED),
        ("https://" + "a" * 64 + ".example.com/a.jpg", Reason.BAD_IMAGE_URL),  # DNS: 63 a label
        ("https://" + ("a" * 60 + ".") * 5 + "com/a.jpg", Reason.BAD_IMAGE_URL),  # > 253
    ],
)
def test_urls_refused_before_any_lookup(url: str, reason: Reason):
    with pytest.raises(RefusalError) as caught:
        parse_url(url, ())
    assert caught.value.reason is reason


def test_url_hosts_are_normalised():
    target = parse_url("https://Images.Example.COM.:8443/a.jpg?x=1", ())
    assert (target.host, target.port, target.address) == ("images.example.com", 8443, None)
    assert parse_url("http://[::1]/a", ()).address == ipaddress.ip_address("::1")


def test_domain_allowlist():
    allowed = ("cdn.example.com", "*.images.test")
    assert domain_allowed("cdn.example.com", allowed)
    assert domain_allowed("a.images.test", allowed)
    assert domain_allowed("a.b.images.test", allowed)
    assert not domain_allowed("images.test", allowed)
    assert not domain_allowed("evilimages.test", allowed)
    assert not domain_allowed("cdn.example.com.evil.test", allowed)
    assert domain_allowed("anything.test", ())
    with pytest.raises(RefusalError) as caught:
        parse_url("https://other.test/a.jpg", allowed)
    assert caught.value.reason is Reason.URL_DOMAIN_REFUSED


# -- the fetcher against a real HTTP server on 127.0.0.1


@dataclass
class Trap:
    """A real HTTP server on 127.0.0.1 that records every request it sees."""

    port: int
    seen: list[str] = field(default_factory=list)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"


@pytest.fixture
def trap() -> Iterator[Trap]:
    state = Trap(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.seen.append(f"{self.headers.get('Host')} {self.path}")
            if self.path.startswith("/redirect/"):
                self.send_response(302)
                self.send_header("Location", self.path.removeprefix("/redirect"))
                self.end_headers()
                return
            if self.path.startswith("/to/"):
                self.send_response(302)
                self.send_header("Location", "http://" + self.path.removeprefix("/to/"))
                self.end_headers()
                return
            body = IMAGE if self.path == "/image.jpg" else b"x" * 5000
            self.send_response(200 if self.path != "/missing" else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield state
    server.shutdown()
    server.server_close()
    thread.join()


def fetcher(
    *,
    loopback: bool,
    resolver_map: dict[str, list[str]] | None = None,
    max_bytes: int = 1_000_000,
    timeout: float = 5.0,
    domains: tuple[str, ...] = (),
) -> RemoteImageFetcher:
    policy = FetchPolicy(max_bytes, timeout, 3, domains, loopback)
    lookups = resolver_map or {}

    async def fake_resolver(
        host: str, port: int
    ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        if host not in lookups:
            raise OSError("name not known")
        return [ipaddress.ip_address(a) for a in lookups[host]]

    return RemoteImageFetcher(policy, fake_resolver)


async def refusal(fetch: RemoteImageFetcher, url: str) -> Reason:
    with pytest.raises(RefusalError) as caught:
        await fetch.fetch(url)
    return caught.value.reason


@pytest.mark.anyio
async def test_loopback_server_sees_no_request_when_its_address_is_refused(trap: Trap):
    fetch = fetcher(loopback=False, resolver_map={"innocent.test": ["127.0.0.1"]})
    assert await refusal(fetch, trap.url("/image.jpg")) is Reason.URL_ADDRESS_REFUSED
    assert (
        await refusal(fetch, f"http://innocent.test:{trap.port}/image.jpg")
        is Reason.URL_ADDRESS_REFUSED
    )
    assert (
        await refusal(fetch, f"http://2130706433:{trap.port}/image.jpg")
        is Reason.URL_ADDRESS_REFUSED
    )
    assert (
        await refusal(fetch, f"http://[::ffff:127.0.0.1]:{trap.port}/image.jpg")
        is Reason.URL_ADDRESS_REFUSED
    )
    assert trap.seen == []


@pytest.mark.anyio
async def test_a_name_with_any_private_answer_is_refused(trap: Trap):
    fetch = fetcher(loopback=True, resolver_map={"mixed.test": ["127.0.0.1", "10.0.0.7"]})
    assert (
        await refusal(fetch, f"http://mixed.test:{trap.port}/image.jpg")
        is Reason.URL_ADDRESS_REFUSED
    )
    assert trap.seen == []


@pytest.mark.anyio
async def test_explicitly_allowed_loopback_serves_the_real_image(trap: Trap):
    fetch = fetcher(loopback=True)
    assert await fetch.fetch(trap.url("/image.jpg")) == IMAGE
    assert trap.seen == [f"127.0.0.1:{trap.port} /image.jpg"]


@pytest.mark.anyio
async def test_connection_is_pinned_to_the_vetted_address_with_the_original_host(trap: Trap):
    fetch = fetcher(loopback=True, resolver_map={"photos.test": ["127.0.0.1"]})
    assert await fetch.fetch(f"http://photos.test:{trap.port}/image.jpg") == IMAGE
    assert trap.seen == [f"photos.test:{trap.port} /image.jpg"]


@pytest.mark.anyio
async def test_redirects_are_vetted_hop_by_hop(trap: Trap):
    fetch = fetcher(loopback=True)
    assert await fetch.fetch(trap.url("/redirect/image.jpg")) == IMAGE
    # A redirect to the metadata address is refused before connecting to it.
    reason = await refusal(fetch, trap.url("/to/169.254.169.254/latest/meta-data/"))
    assert reason is Reason.URL_ADDRESS_REFUSED
    assert await refusal(fetch, trap.url("/to/0x7f.1/x")) is Reason.URL_ADDRESS_REFUSED


@pytest.mark.anyio
async def test_at_most_three_redirects(trap: Trap):
    fetch = fetcher(loopback=True)
    assert await fetch.fetch(trap.url("/redirect/redirect/redirect/image.jpg")) == IMAGE
    trap.seen.clear()
    reason = await refusal(fetch, trap.url("/redirect/redirect/redirect/redirect/image.jpg"))
    assert reason is Reason.FETCH_TOO_MANY_REDIRECTS
    assert len(trap.seen) == 4


@pytest.mark.anyio
async def test_bytes_are_capped_and_errors_are_clean(trap: Trap):
    small = fetcher(loopback=True, max_bytes=1000)
    assert await refusal(small, trap.url("/big")) is Reason.IMAGE_TOO_LARGE
    fetch = fetcher(loopback=True)
    assert await refusal(fetch, trap.url("/missing")) is Reason.FETCH_FAILED
    assert await refusal(fetch, "http://unknown.test/a.jpg") is Reason.FETCH_FAILED


@pytest.mark.anyio
async def test_one_deadline_covers_the_whole_fetch():
    # A listener that accepts and never answers.
    import socket

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        fetch = fetcher(loopback=True, timeout=0.5)
        assert await refusal(fetch, f"http://127.0.0.1:{port}/slow.jpg") is Reason.FETCH_TIMEOUT


@pytest.mark.anyio
async def test_domain_allowlist_is_applied_to_redirect_targets(trap: Trap):
    fetch = fetcher(loopback=True, resolver_map={"ok.test": ["127.0.0.1"]}, domains=("ok.test",))
    assert await fetch.fetch(f"http://ok.test:{trap.port}/image.jpg") == IMAGE
    reason = await refusal(fetch, f"http://ok.test:{trap.port}/to/127.0.0.1:{trap.port}/image.jpg")
    assert reason is Reason.URL_DOMAIN_REFUSED


@pytest.mark.anyio
async def test_a_name_the_resolver_cannot_encode_is_a_fetch_failure():
    async def idna_refusing(
        host: str, port: int
    ) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
        raise UnicodeError("label empty or too long")

    fetch = RemoteImageFetcher(FetchPolicy(1000, 5.0, 3, (), False), idna_refusing)
    assert await refusal(fetch, "https://example.com/a.jpg") is Reason.FETCH_FAILED
