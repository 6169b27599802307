"""`qwenvl-serve render`: write (or check) the nginx and systemd files of a deployment."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qwenvl_serve.deploy.loading import Deployment, DeploymentError, load_deployment
from qwenvl_serve.deploy.nginx import render_nginx
from qwenvl_serve.deploy.systemd import render_systemd
from qwenvl_serve.errors import UserError

NGINX_FILE = "nginx/qwenvl-serve.conf"
# Directories under --out where `render` writes; of the files already there, only those
# starting with RENDERED_MARK (files it wrote) are its own, to replace or remove.
OWNED_DIRS = ("nginx", "systemd")
RENDERED_MARK = b"# Rendered by `qwenvl-serve render`"

RENDER_HELP = (
    "write the nginx config and systemd units of a deployment file: "
    "OUT/nginx/qwenvl-serve.conf and OUT/systemd/ (units, model configs, one env file per "
    "instance, by host). Files it wrote earlier that the deployment no longer produces are "
    "removed; other files are left alone."
)


class RenderDriftError(UserError):
    """``--check`` found files that differ from what the deployment renders to."""

    exit_code = 1


def rendered_files(deployment: Deployment) -> dict[str, str]:
    """Relative path -> text of every file the deployment renders to."""
    files = {NGINX_FILE: render_nginx(deployment)}
    files.update({f"systemd/{path}": text for path, text in render_systemd(deployment).items()})
    return files


def existing_files(out: Path) -> dict[str, str]:
    """The files `render` wrote that are now under ``out``, by relative path."""
    found = {}
    for directory in OWNED_DIRS:
        root = out / directory
        if root.is_dir():
            for path in sorted(root.rglob("*")):
                data = path.read_bytes() if path.is_file() else b""
                if data.startswith(RENDERED_MARK):
                    found[path.relative_to(out).as_posix()] = data.decode("utf-8", "replace")
    return found


def drift(files: Mapping[str, str], existing: Mapping[str, str]) -> list[str]:
    """What differs between rendered and existing files, one line each, sorted."""
    lines = []
    for path in sorted(set(files) | set(existing)):
        if path not in existing:
            lines.append(f"missing: {path}")
        elif path not in files:
            lines.append(f"stale: {path}")
        elif files[path] != existing[path]:
            lines.append(f"differs: {path}")
    return lines


def write_files(files: Mapping[str, str], out: Path) -> None:
    """Write every file and remove stale ones under the owned directories."""
    for stale in set(existing_files(out)) - set(files):
        (out / stale).unlink()
    for path, text in files.items():
        target = out / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text, encoding="utf-8")


def deployment_reference() -> str:
    """Markdown tables of every deployment file key, list items included."""
    from qwenvl_serve.config_docs import render_reference
    from qwenvl_serve.deploy.config import DeploymentConfig, ModelEntry, Replica

    parts = [render_reference(DeploymentConfig)]
    for prefix, model in (("models[]", ModelEntry), ("models[].replicas[]", Replica)):
        text = render_reference(model).replace("#### top level", f"#### `{prefix}`")
        text = text.replace("#### `", f"#### `{prefix}.").replace(
            f"`{prefix}.{prefix}`", f"`{prefix}`"
        )
        parts.append(re.sub(r"^\| `", f"| `{prefix}.", text, flags=re.MULTILINE))
    return "\n".join(parts)


def cmd_render(args: argparse.Namespace) -> int:
    """Render, check or describe a deployment."""
    if args.reference:
        print(deployment_reference(), end="")
        return 0
    if args.deploy is None or args.out is None:
        raise DeploymentError("render needs --deploy FILE and --out DIR")
    files = rendered_files(load_deployment(args.deploy, os.environ))
    if args.check:
        differences = drift(files, existing_files(args.out))
        if differences:
            listing = "; ".join(differences)
            raise RenderDriftError(f"{args.out} is out of date with {args.deploy}: {listing}")
        return 0
    write_files(files, args.out)
    print(f"wrote {len(files)} files under {args.out}")
    return 0


def register_render(commands: Any) -> None:
    """The `render` subcommand."""
    render = commands.add_parser("render", help=RENDER_HELP, description=RENDER_HELP)
    render.add_argument("--deploy", type=Path, metavar="FILE", help="deployment file (YAML)")
    render.add_argument("--out", type=Path, metavar="DIR", help="where nginx/ and systemd/ go")
    render.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 and list the files that differ from what would be written",
    )
    render.add_argument(
        "--reference",
        action="store_true",
        help="print the deployment file reference (every key, its type, default, meaning)",
    )
    render.set_defaults(handler=cmd_render)
