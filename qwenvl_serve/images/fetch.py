"""Fetch a remote image (or video) safely: DNS once, connect only to the vetted address.

Every hop (the URL and each redirect) is vetted by :mod:`url_vetting`; the name is
resolved once per hop and the connection is pinned to the address that passed (the
request goes to that IP, with the original name as Host header and TLS SNI, so the
certificate is still checked against the name). Bytes are capped while streaming and
one deadline covers the whole fetch.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import httpx

from qwenvl_serve.images.config import ImagesConfig
from qwenvl_serve.images.rejections import Reason, RefusalError
from qwenvl_serve.images.url_vetting import IPAddress, UrlTarget, parse_url, vet_addresses

Resolver = Callable[[str, int], Awaitable[list[IPAddress]]]
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
USER_AGENT = "qwenvl-serve image fetcher"


async def system_resolver(host: str, port: int) -> list[IPAddress]:
    """Every address the system resolver returns for ``host``."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    # IPv6 answers may carry a scope id ("fe80::1%eth0"); the address part is what counts.
    return [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]


@dataclass(frozen=True)
class FetchPolicy:
    """The limits of one remote fetch."""

    max_bytes: int
    timeout_seconds: float
    max_redirects: int
    allowed_domains: tuple[str, ...]
    allow_loopback: bool
    accept: str = "image/*"  # the Accept header: what kind of media is fetched

    @classmethod
    def from_config(cls, config: ImagesConfig) -> FetchPolicy:
        return cls(
            max_bytes=config.max_bytes,
            timeout_seconds=config.fetch_timeout_seconds,
            max_redirects=config.max_redirects,
            allowed_domains=tuple(config.allowed_domains),
            allow_loopback=config.allow_loopback_urls_for_testing,
        )


class RemoteImageFetcher:
    """Fetches image URLs under a :class:`FetchPolicy`; refusals are RefusalError."""

    def __init__(self, policy: FetchPolicy, resolver: Resolver = system_resolver) -> None:
        self.policy = policy
        self.resolver = resolver

    def check_syntax(self, url: str) -> None:
        """Refuse a URL that can never be fetched, before anything is fetched."""
        parse_url(url, self.policy.allowed_domains)

    async def fetch(self, url: str) -> bytes:
        """The body of ``url`` (at most ``max_bytes``), following vetted redirects."""
        try:
            async with asyncio.timeout(self.policy.timeout_seconds):
                return await self._follow(url)
        except TimeoutError:
            raise RefusalError(Reason.FETCH_TIMEOUT) from None
        except (httpx.HTTPError, OSError):
            # Refused connections, TLS failures, resets: the URL is unreachable.
            raise RefusalError(Reason.FETCH_FAILED) from None

    async def _follow(self, url: str) -> bytes:
        # No environment proxies: a proxy would connect somewhere we did not vet.
        async with httpx.AsyncClient(trust_env=False, follow_redirects=False) as client:
            current = url
            for _ in range(self.policy.max_redirects + 1):
                target = parse_url(current, self.policy.allowed_domains)
                address = await self._vetted_address(target)
                location = await self._get(client, target, address)
                if isinstance(location, bytes):
                    return location
                current = str(target.url.join(location))
        raise RefusalError(Reason.FETCH_TOO_MANY_REDIRECTS)

    async def _vetted_address(self, target: UrlTarget) -> IPAddress:
        if target.address is not None:
            return vet_addresses([target.address], self.policy.allow_loopback)
        try:
            addresses = await self.resolver(target.host, target.port)
        except (OSError, UnicodeError):  # UnicodeError: a name the IDNA codec refuses
            raise RefusalError(Reason.FETCH_FAILED) from None
        return vet_addresses(addresses, self.policy.allow_loopback)

    async def _get(
        self, client: httpx.AsyncClient, target: UrlTarget, address: IPAddress
    ) -> bytes | str:
        """The body, or the Location of a redirect."""
        pinned = target.url.copy_with(host=str(address))
        request = client.build_request(
            "GET",
            pinned,
            headers={
                "Host": target.url.netloc.decode("ascii"),
                "User-Agent": USER_AGENT,
                "Accept": self.policy.accept,
                "Accept-Encoding": "identity",
            },
            extensions={"sni_hostname": target.host},
        )
        response = await client.send(request, stream=True)
        try:
            if response.status_code in REDIRECT_STATUSES:
                location = response.headers.get("location")
                if not location:
                    raise RefusalError(Reason.FETCH_FAILED)
                return str(location)
            if response.status_code != 200:
                raise RefusalError(Reason.FETCH_FAILED)
            return await self._capped_body(response)
        finally:
            await response.aclose()

    async def _capped_body(self, response: httpx.Response) -> bytes:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.policy.max_bytes:
            raise RefusalError(Reason.IMAGE_TOO_LARGE)
        chunks: list[bytes] = []
        received = 0
        async for chunk in response.aiter_raw():
            received += len(chunk)
            if received > self.policy.max_bytes:
                raise RefusalError(Reason.IMAGE_TOO_LARGE)
            chunks.append(chunk)
        return b"".join(chunks)
