"""The playground's files: the page, its script and style from package data, the prompt
templates, generated from the caption command's so both ask the same questions, and the
API paths the page calls, generated from the route table."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files

from qwenvl_serve.caption.prompts import all_templates
from qwenvl_serve.routes import CHAT_COMPLETIONS, CHAT_COMPLETIONS_PATH, MODELS, MODELS_PATH

STATIC_FILES = {
    "index.html": "text/html; charset=utf-8",
    "playground.js": "text/javascript; charset=utf-8",
    "playground.css": "text/css; charset=utf-8",
}
TEMPLATES_NAME = "templates.json"
ROUTES_NAME = "routes.json"


@dataclass(frozen=True)
class Asset:
    """One file the playground serves."""

    body: bytes
    content_type: str


def templates_json() -> bytes:
    """The style templates as JSON: ``{language: {style: {"one", "group"}}}``."""
    return json.dumps(all_templates(), ensure_ascii=False, sort_keys=True).encode()


def routes_json() -> bytes:
    """The API paths the page calls, from the route table, relative to the server root."""
    paths = {MODELS: MODELS_PATH, CHAT_COMPLETIONS: CHAT_COMPLETIONS_PATH}
    return json.dumps({name: path.lstrip("/") for name, path in paths.items()}).encode()


def load_assets() -> dict[str, Asset]:
    """Every playground file by name, read once from the installed package."""
    static = files("qwenvl_serve.playground") / "static"
    assets = {
        name: Asset((static / name).read_bytes(), content_type)
        for name, content_type in STATIC_FILES.items()
    }
    assets[TEMPLATES_NAME] = Asset(templates_json(), "application/json")
    assets[ROUTES_NAME] = Asset(routes_json(), "application/json")
    return assets
