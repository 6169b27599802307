"""The rendered nginx config: `nginx -t` on it, its directives, and its routing table run
by real nginx in front of small echo servers (the engine itself: tests/e2e/test_nginx.py)."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import socket
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from qwenvl_serve.deploy.config import TlsConfig
from qwenvl_serve.deploy.loading import Deployment, load_deployment
from qwenvl_serve.deploy.local_nginx import (
    local_variant,
    nginx_argv,
    running_nginx,
    write_local_files,
)
from qwenvl_serve.deploy.nginx import render_nginx
from tests.servers import free_port

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "example.yaml"

# A throwaway self-signed certificate and key (CN=localhost), only for `nginx -t`.
TEST_CERTIFICATE = """-----BEGIN CERTIFICATE-----
MIIBgDCCASWgAwIBAgIUfK7DXHM1AEasFeROomAwoLFhz7gwCgYIKoZIzj0EAwIw
FDESMBAGA1UEAwwJbG9jYWxob3N0MCAXDTI2MTEyMTIyMDYwOVoYDzIxMjYxMDI4
MjIwNjA5WjAUMRIwEAYDVQQDDAlsb2NhbGhvc3QwWTATBgcqhkjOPQIBBggqhkjO
PQMBBwNCAASW6IAV+X0hwVhBT2Jqzd9cR5waeb7e1koCGO/awBby+YPNLFcaP4og
wLdV7mB6AffNKZ2Z5qV3Ew9e/BTUjicWo1MwUTAdBgNVHQ4EFgQUKyZecEQEggCB
7193fJdJSrHY5u4wHwYDVR0jBBgwFoAUKyZecEQEggCB7193fJdJSrHY5u4wDwYD
VR0TAQH/BAUwAwEB/zAKBggqhkjOPQQDAgNJADBGAiEAjKdmZpFwlrKhgGMuFf1z
Z9vo+uyW0zqV7isziI7L/oMCIQDK/bwYDPyEkZS+rTm8VsQ1wKMGQbnxxP8UDhUb
mtCT2g==
-----END CERTIFICATE-----
"""
TEST_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg6ywe2cPeGFVPaqe9
75qm9k9s3ek1TSYZh6oEWRtVfDyhRANCAASW6IAV+X0hwVhBT2Jqzd9cR5waeb7e
1koCGO/awBby+YPNLFcaP4ogwLdV7mB6AffNKZ2Z5qV3Ew9e/BTUjicW
-----END PRIVATE KEY-----
"""


@pytest.fixture(scope="module")
def example() -> Deployment:
    return load_deployment(EXAMPLE, {})


def nginx_check(site_text: str, prefix: Path) -> subprocess.CompletedProcess[str]:
    write_local_files(site_text, prefix)
    return subprocess.run(nginx_argv(prefix, "-t"), capture_output=True, text=True, check=False)


def location(text: str, head: str) -> str:
    """The body of the block that starts with ``head {``."""
    start = text.index(head + " {")
    return text[start : text.index("\n    }", start)]


def test_nginx_accepts_the_rendered_example(example, tmp_path):
    result = nginx_check(render_nginx(local_variant(example, tmp_path, "127.0.0.1:8080")), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "test is successful" in result.stderr


def test_nginx_accepts_the_tls_variant(example, tmp_path):
    (tmp_path / "cert.pem").write_text(TEST_CERTIFICATE)
    (tmp_path / "key.pem").write_text(TEST_KEY)
    local = local_variant(example, tmp_path, "127.0.0.1:8443")
    tls = TlsConfig(
        certificate=str(tmp_path / "cert.pem"), certificate_key=str(tmp_path / "key.pem")
    )
    server = local.config.server.model_copy(update={"tls": tls})
    variant = dataclasses.replace(local, config=local.config.model_copy(update={"server": server}))
    text = render_nginx(variant)
    assert "listen 127.0.0.1:8443 ssl default_server;" in text  # a given listen is kept
    assert "return 301" not in text  # not on 443: no redirect from port 80
    result = nginx_check(text, tmp_path)
    assert result.returncode == 0, result.stderr


def with_server(deployment: Deployment, **update: object) -> Deployment:
    server = deployment.config.server.model_copy(update=update)
    config = deployment.config.model_copy(update={"server": server})
    return dataclasses.replace(deployment, config=config)


def test_tls_without_a_listen_serves_443_and_redirects_port_80(example, tmp_path):
    (tmp_path / "cert.pem").write_text(TEST_CERTIFICATE)
    (tmp_path / "key.pem").write_text(TEST_KEY)
    tls = TlsConfig(
        certificate=str(tmp_path / "cert.pem"), certificate_key=str(tmp_path / "key.pem")
    )
    local = local_variant(example, tmp_path, "127.0.0.1:8443")
    text = render_nginx(with_server(local, listen=None, tls=tls))
    assert "listen 443 ssl default_server;" in text
    assert "listen 80 ssl" not in text
    redirect = text[text.rindex("server {") :]
    assert "listen 80 default_server;" in redirect
    assert "server_name _;" in redirect
    assert "return 301 https://$host$request_uri;" in redirect
    assert nginx_check(text, tmp_path).returncode == 0
    # A given listen on 443 gets the redirect from port 80 of the same address.
    named = with_server(local, listen="10.0.0.5:443", tls=tls, server_name="qwenvl.example.com")
    text = render_nginx(named)
    assert "listen 10.0.0.5:443 ssl;" in text
    assert "listen 10.0.0.5:80;" in text[text.rindex("server {") :]


def test_the_catch_all_name_is_rendered_as_the_default_server(example, tmp_path):
    """`server_name _` matches no host: another server first on the port (like Debian's
    default site) would take every request unless this one is the default_server."""
    assert "listen 80 default_server;" in render_nginx(example)
    named = with_server(example, server_name="qwenvl.example.com")
    assert "listen 80;" in render_nginx(named)
    port = free_port()
    other_site = f"server {{ listen 127.0.0.1:{port}; server_name other.invalid; return 418; }}\n"
    text = other_site + render_nginx(local_variant(example, tmp_path, f"127.0.0.1:{port}"))
    with running_nginx(text, tmp_path, port):
        response = httpx.get(f"http://127.0.0.1:{port}/nowhere", timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"


def test_nginx_refuses_a_broken_config(example, tmp_path):
    """The check above can fail: a config with a bad directive does not pass."""
    text = render_nginx(local_variant(example, tmp_path, "127.0.0.1:8080"))
    result = nginx_check(text.replace("least_conn;", "least_conn on;", 1), tmp_path)
    assert result.returncode != 0


def test_one_upstream_per_model_with_balancing_and_passive_health(example):
    text = render_nginx(example)
    for name, port in (("instruct", 8001), ("thinking", 8002), ("moe", 8003)):
        upstream = location(text, f"upstream qwenvl_{name}")
        assert "least_conn;" in upstream
        assert f"server 127.0.0.1:{port} max_fails=2 fail_timeout=10s;" in upstream
        assert "keepalive 32;" in upstream
    assert "proxy_next_upstream error timeout;" in text
    assert "proxy_next_upstream_tries 2;" in text
    assert "proxy_http_version 1.1;" in text
    assert 'proxy_set_header Connection "";' in text


def test_each_model_has_its_openai_base_url_and_the_default_also_at_v1(example):
    text = render_nginx(example)
    for name in ("instruct", "thinking", "moe"):
        chat = location(text, f"location = /{name}/v1/chat/completions")
        assert f"proxy_pass http://qwenvl_{name}/v1/chat/completions;" in chat
    assert "proxy_pass http://qwenvl_instruct/v1/chat/completions;" in location(
        text, "location = /v1/chat/completions"
    )


def test_streaming_routes_pass_chunks_through_and_are_capped(example):
    text = render_nginx(example)
    chat = location(text, "location = /thinking/v1/chat/completions")
    assert "proxy_buffering off;" in chat
    assert "proxy_request_buffering off;" in chat
    assert "proxy_read_timeout 1800s;" in chat  # the model's own read timeout
    assert "limit_req zone=qwenvl_per_ip burst=20 nodelay;" in chat
    assert "limit_req zone=qwenvl_per_key burst=40 nodelay;" in chat
    assert "limit_conn qwenvl_conn_per_ip 32;" in chat
    # 4 images x 10 MiB x 4/3 + 1 MiB = 54.3 MiB, rounded up.
    assert "client_max_body_size 55m;" in chat
    assert "limit_req_status 429;" in text
    assert "limit_req_zone $binary_remote_addr zone=qwenvl_per_ip:10m rate=10r/s;" in text
    assert "limit_req_zone $qwenvl_api_key zone=qwenvl_per_key:10m rate=20r/s;" in text


def test_a_body_override_and_the_global_cap_apply(example):
    instruct = example.models[0]
    entry = instruct.entry.model_copy(
        update={"limits": instruct.entry.limits.model_copy(update={"max_body_mib": 100})}
    )
    capped = dataclasses.replace(
        example, models=(dataclasses.replace(instruct, entry=entry), *example.models[1:])
    )
    text = render_nginx(capped)
    assert "client_max_body_size 64m;" in location(text, "location = /instruct/v1/chat/completions")
    limits = example.config.limits.model_copy(update={"max_body_mib": 20})
    smaller = dataclasses.replace(
        example, config=example.config.model_copy(update={"limits": limits})
    )
    assert "client_max_body_size 20m;" in location(
        render_nginx(smaller), "location = /moe/v1/chat/completions"
    )


def test_metrics_only_from_the_configured_networks(example):
    metrics = location(render_nginx(example), "location = /moe/metrics")
    assert metrics.index("allow 10.0.0.0/8;") < metrics.index("deny all;")
    assert "allow 127.0.0.0/8;" in metrics


def test_no_location_for_routes_off_the_allowlist(example):
    text = render_nginx(example)
    paths = re.findall(r"location (?:= )?(/\S*) \{", text)
    assert all("tokenize" not in path and "invocations" not in path for path in paths)
    assert "location / {" in text


def test_generate_content_routes_by_the_served_name_and_long_aliases(example):
    text = render_nginx(example)
    assert "qwen3-vl-30b-a3b-instruct qwenvl_moe;" in text
    moe = example.models[2]
    alias = "gemini-2.5-flash-preview-with-a-really-long-name-to-route"
    genai = moe.instance.generate_content.model_copy(update={"model_aliases": [alias]})
    instance = moe.instance.model_copy(update={"generate_content": genai})
    aliased = dataclasses.replace(
        example, models=(*example.models[:2], dataclasses.replace(moe, instance=instance))
    )
    assert '"~^gemini-2\\.5-flash-preview-with-a-really-long-name-to-route$" qwenvl_moe;' in (
        render_nginx(aliased)
    )


# ---- real nginx in front of echo servers: the routing table as a client sees it


class EchoHandler(BaseHTTPRequestHandler):
    """Answers every request with what it received, and which echo server it is."""

    def do_GET(self) -> None:
        self.answer()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("content-length", "0")))
        self.answer()

    def answer(self) -> None:
        body = json.dumps(
            {
                "server": self.server.name,  # type: ignore[attr-defined]
                "path": self.path,
                "request_id": self.headers.get("x-request-id"),
            }
        ).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@contextlib.contextmanager
def echo_server(name: str) -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), EchoHandler)
    server.name = name  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def with_replicas(deployment: Deployment, ports: dict[str, int]) -> Deployment:
    models = []
    for model in deployment.models:
        replicas = [{"address": f"127.0.0.1:{ports[model.entry.name]}"}]
        entry = model.entry.model_validate({**model.entry.model_dump(), "replicas": replicas})
        models.append(dataclasses.replace(model, entry=entry))
    limits = deployment.config.limits.model_copy(
        update={"rate_per_key": "1r/m", "burst_per_key": 1, "rate_per_ip": None}
    )
    timeouts = deployment.config.timeouts.model_copy(update={"client_header_seconds": 1})
    config = deployment.config.model_copy(update={"limits": limits, "timeouts": timeouts})
    return dataclasses.replace(deployment, models=tuple(models), config=config)


@pytest.fixture(scope="module")
def nginx_over_echo(example, tmp_path_factory) -> Iterator[str]:
    prefix = tmp_path_factory.mktemp("nginx")
    with echo_server("instruct") as a, echo_server("thinking") as b, echo_server("moe") as c:
        port = free_port()
        deployment = with_replicas(example, {"instruct": a, "thinking": b, "moe": c})
        text = render_nginx(local_variant(deployment, prefix, f"127.0.0.1:{port}"))
        with running_nginx(text, prefix, port):
            yield f"http://127.0.0.1:{port}"


@pytest.mark.parametrize(
    ("path", "server", "upstream_path"),
    [
        ("/instruct/v1/chat/completions", "instruct", "/v1/chat/completions"),
        ("/thinking/v1/completions", "thinking", "/v1/completions"),
        ("/moe/v1/models", "moe", "/v1/models"),
        ("/v1/chat/completions", "instruct", "/v1/chat/completions"),
        ("/thinking/health", "thinking", "/health"),
        (
            "/v1beta/models/qwen3-vl-4b-thinking:streamGenerateContent?alt=sse",
            "thinking",
            "/v1beta/models/qwen3-vl-4b-thinking:streamGenerateContent?alt=sse",
        ),
        (
            "/moe/v1beta/models/qwen3-vl-30b-a3b-instruct:generateContent",
            "moe",
            "/v1beta/models/qwen3-vl-30b-a3b-instruct:generateContent",
        ),
    ],
)
def test_routes_reach_the_right_model(nginx_over_echo, path, server, upstream_path):
    method = "GET" if path.endswith(("models", "health")) else "POST"
    response = httpx.request(method, nginx_over_echo + path, json={}, timeout=5)
    assert response.status_code == 200
    assert response.json()["server"] == server
    assert response.json()["path"] == upstream_path


def test_slow_client_phases_are_bounded(example):
    text = render_nginx(example)
    for directive in ("client_header_timeout", "client_body_timeout", "send_timeout"):
        assert re.search(rf"^\s*{directive} \d+s;$", text, re.M), directive
    assert "keepalive_timeout 30s;" in text


def test_headers_that_never_finish_are_cut_off_by_nginx(nginx_over_echo):
    port = int(nginx_over_echo.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=30) as connection:
        connection.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        # nginx closes the connection once client_header_timeout (1 s here) passes;
        # the socket's own 30 s timeout would raise instead.
        answer = connection.recv(65536)
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408")


@pytest.mark.parametrize(
    "path", ["/tokenize", "/instruct/tokenize", "/instruct/v1/embeddings", "/docs", "/instruct/v1"]
)
def test_paths_off_the_allowlist_get_a_json_404_from_nginx(nginx_over_echo, path):
    response = httpx.post(nginx_over_echo + path, json={}, timeout=5)
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "not_found_error"
    assert "server" not in response.json()


def test_unknown_generate_content_model_gets_a_google_404(nginx_over_echo):
    response = httpx.post(nginx_over_echo + "/v1beta/models/other:generateContent", json={})
    assert response.status_code == 404
    assert response.json()["error"]["status"] == "NOT_FOUND"


def test_request_id_is_passed_when_sane_and_minted_otherwise(nginx_over_echo):
    url = nginx_over_echo + "/moe/v1/models"
    kept = httpx.get(url, headers={"x-request-id": "trace-42"}).json()["request_id"]
    minted = httpx.get(url, headers={"x-request-id": "bad id with spaces"}).json()["request_id"]
    assert kept == "trace-42"
    assert re.fullmatch(r"[0-9a-f]{32}", minted)


def test_per_key_rate_counts_bearer_google_header_and_query_key_alike(nginx_over_echo):
    url = nginx_over_echo + "/instruct/v1/models"
    # The rate is 1 per minute with a burst of 1: two requests pass, the third is refused.
    assert httpx.get(url, headers={"authorization": "Bearer key-one"}).status_code == 200
    assert httpx.get(url, headers={"x-goog-api-key": "key-one"}).status_code == 200
    refused = httpx.get(url, params={"key": "key-one"})
    assert refused.status_code == 429
    assert refused.headers["retry-after"] == "1"
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert httpx.get(url, headers={"authorization": "Bearer key-two"}).status_code == 200


def test_rate_limit_rejections_keep_api_keys_out_of_the_error_log(example, tmp_path):
    """nginx logs each rejection with the request line, `?key=` included: at info level,
    below the error log's threshold, it is not written."""
    assert "limit_req_log_level info;" in render_nginx(example)
    assert "limit_conn_log_level info;" in render_nginx(example)
    port = free_port()
    with echo_server("instruct") as a, echo_server("thinking") as b, echo_server("moe") as c:
        deployment = with_replicas(example, {"instruct": a, "thinking": b, "moe": c})
        text = render_nginx(local_variant(deployment, tmp_path, f"127.0.0.1:{port}"))
        with running_nginx(text, tmp_path, port):
            url = f"http://127.0.0.1:{port}/instruct/v1/models"
            statuses = [httpx.get(url, params={"key": "leaky-secret"}).status_code for _ in "abc"]
    assert statuses[-1] == 429
    assert "leaky-secret" not in (tmp_path / "error.log").read_text()
