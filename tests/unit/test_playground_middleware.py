"""The playground layer: serves its page and files, passes everything else through."""

import json
import re
from html.parser import HTMLParser

import httpx
import pytest
from starlette.types import Receive, Scope, Send

from qwenvl_serve.caption.prompts import LANGUAGES, STYLES, style_prompt
from qwenvl_serve.playground.assets import STATIC_FILES, load_assets
from qwenvl_serve.playground.config import PlaygroundConfig
from qwenvl_serve.playground.middleware import (
    NotOurs,
    PlaygroundMiddleware,
    Redirect,
    Serve,
    resolve,
)
from qwenvl_serve.routes import is_allowed

pytestmark = pytest.mark.anyio


async def inner_app(scope: Scope, receive: Receive, send: Send) -> None:
    body = json.dumps({"inner": scope["path"]}).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


def client(enabled=True):
    app = PlaygroundMiddleware(inner_app, PlaygroundConfig(enabled=enabled))
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


@pytest.mark.parametrize(
    ("path", "target"),
    [
        ("/playground", Serve("index.html")),
        ("/playground/", Redirect("../playground")),
        ("/playground/playground.js", Serve("playground.js")),
        ("/playgrounds", NotOurs()),
        ("/v1/models", NotOurs()),
    ],
)
def test_resolve(path, target):
    assert resolve(path) == target


async def test_the_page_is_served_with_a_strict_content_security_policy():
    async with client() as http:
        response = await http.get("/playground")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = response.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "connect-src 'self'" in policy
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "<title>Playground · qwenvl-serve</title>" in response.text


@pytest.mark.parametrize(
    ("name", "content_type"),
    [("playground.js", "text/javascript"), ("playground.css", "text/css")],
)
async def test_script_and_style_are_served_with_their_types(name, content_type):
    async with client() as http:
        response = await http.get(f"/playground/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(content_type)
    assert int(response.headers["content-length"]) == len(response.content) > 100


async def test_templates_come_from_the_caption_prompts():
    async with client() as http:
        templates = (await http.get("/playground/templates.json")).json()
    assert templates["zh"]["alt-text"]["one"] == style_prompt("alt-text", "zh")
    assert "{count}" in templates["en"]["social"]["group"]


async def test_the_page_calls_the_paths_of_the_route_table():
    async with client() as http:
        routes = (await http.get("/playground/routes.json")).json()
    assert routes == {"models": "v1/models", "chat_completions": "v1/chat/completions"}
    for path in routes.values():
        assert is_allowed("/" + path)


async def test_head_has_headers_and_no_body():
    async with client() as http:
        response = await http.head("/playground")
    assert response.status_code == 200
    assert response.content == b""
    assert int(response.headers["content-length"]) > 0


async def test_other_methods_and_unknown_files_get_openai_style_errors():
    from prometheus_client import CollectorRegistry

    from qwenvl_serve.config_loading import resolve_config
    from qwenvl_serve.middleware import QwenVLServeMiddleware

    stack = QwenVLServeMiddleware(inner_app, resolve_config({"model": "m"}), CollectorRegistry())
    transport = httpx.ASGITransport(app=stack)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as whole:
        posted = await whole.post("/playground")  # the route table's 405, as on every route
    async with client() as http:
        missing = await http.get("/playground/%2e%2e/%2e%2e/etc/passwd")
        unknown = await http.get("/playground/secret.py")
    assert posted.status_code == 405
    assert posted.headers["allow"] == "GET, HEAD"
    assert posted.json()["error"]["message"] == "Use GET, HEAD."
    assert missing.status_code == 404
    assert unknown.status_code == 404
    assert unknown.json()["error"]["message"] == "No such playground file."


async def test_trailing_slash_redirects_relatively():
    async with client() as http:
        response = await http.get("/playground/")
    assert response.status_code == 308
    assert response.headers["location"] == "../playground"


async def test_everything_else_passes_through():
    async with client() as http:
        response = await http.post("/v1/chat/completions", json={})
    assert response.json() == {"inner": "/v1/chat/completions"}


async def test_disabled_playground_leaves_the_path_to_the_next_layer():
    async with client(enabled=False) as http:
        response = await http.get("/playground")
    assert response.json() == {"inner": "/playground"}


async def test_lifespan_and_websocket_scopes_pass_through():
    seen = []

    async def app(scope, receive, send):
        seen.append(scope["type"])

    async def receive():
        return {"type": "lifespan.startup"}

    async def send(message):
        pass

    layer = PlaygroundMiddleware(app, PlaygroundConfig())
    await layer({"type": "lifespan"}, receive, send)
    await layer({"type": "websocket", "path": "/playground"}, receive, send)
    assert seen == ["lifespan", "websocket"]


class _PageFacts(HTMLParser):
    """Collects what the accessibility and no-CDN checks need from the page."""

    def __init__(self):
        super().__init__()
        self.ids = {}
        self.label_for = set()
        self.urls = []
        self.style_options = []
        self._in_style_select = False

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if "id" in attributes:
            self.ids[attributes["id"]] = tag
        if tag == "label" and "for" in attributes:
            self.label_for.add(attributes["for"])
        for name in ("src", "href"):
            if name in attributes:
                self.urls.append(attributes[name])
        if tag == "select":
            self._in_style_select = attributes.get("id") == "style"
        if tag == "option" and self._in_style_select:
            self.style_options.append(attributes["value"])


def page_facts():
    facts = _PageFacts()
    facts.feed(load_assets()["index.html"].body.decode())
    return facts


def test_every_form_control_has_a_label():
    facts = page_facts()
    controls = {id_ for id_, tag in facts.ids.items() if tag in ("input", "select", "textarea")}
    assert controls
    assert controls <= facts.label_for


def test_the_page_loads_nothing_from_elsewhere():
    facts = page_facts()
    assert facts.urls
    assert all(not re.match(r"^(https?:)?//", url) for url in facts.urls), facts.urls
    script = load_assets()["playground.js"].body.decode()
    assert not re.search(r"https?://", script)


def test_the_style_menu_offers_exactly_the_caption_styles():
    assert page_facts().style_options == ["", *STYLES]


def test_every_static_file_is_packaged():
    assets = load_assets()
    assert set(STATIC_FILES) < set(assets)
    assert all(asset.body for asset in assets.values())
    assert set(LANGUAGES) == set(json.loads(assets["templates.json"].body))
