"""The ``qwenvl-serve`` command line.

Each subcommand lives next to the feature it belongs to and registers itself through a
``register(commands)`` function listed in :data:`SUBCOMMANDS`; this module only builds
the parser and turns :class:`~qwenvl_serve.errors.UserError` into a message and status.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from qwenvl_serve import __version__
from qwenvl_serve.access.report import register_usage
from qwenvl_serve.bench.command import register_bench
from qwenvl_serve.caption.command import register_caption
from qwenvl_serve.config import InstanceConfig
from qwenvl_serve.config_loading import load_config
from qwenvl_serve.deploy.render import register_render
from qwenvl_serve.errors import UserError

Subcommands = Any  # argparse's _SubParsersAction, which typeshed marks private
Handler = Callable[[argparse.Namespace], int]


def add_config_options(parser: argparse.ArgumentParser) -> None:
    """``--config FILE`` and repeatable ``--set KEY=VALUE``, shared by instance commands."""
    parser.add_argument(
        "--config", required=True, type=Path, metavar="FILE", help="instance config (YAML)"
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override one setting by dotted key, e.g. engine.max_model_len=8192 (repeatable)",
    )


def load_from_args(args: argparse.Namespace) -> InstanceConfig:
    """The validated config named by ``--config`` and ``--set``."""
    return load_config(args.config, args.overrides, os.environ)


def cmd_serve(args: argparse.Namespace) -> int:
    """Run vLLM's OpenAI server with our middleware, in the foreground."""
    from qwenvl_serve.launch_plan import build_launch_plan
    from qwenvl_serve.launcher import run_server

    config = load_from_args(args)
    return run_server(config, build_launch_plan(config))


def cmd_args(args: argparse.Namespace) -> int:
    """Print the vLLM command line and environment that `serve` would run."""
    from qwenvl_serve.launch_plan import build_launch_plan, render_plan

    print(render_plan(build_launch_plan(load_from_args(args)), sys.executable))
    return 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    """Write the tiny random-weight Qwen3-VL checkpoint."""
    from qwenvl_serve.tiny_model import build_tiny_model

    path = build_tiny_model(args.directory)
    print(f"wrote tiny Qwen3-VL checkpoint to {path} (random weights: its text is meaningless)")
    return 0


def cmd_config_reference(args: argparse.Namespace) -> int:
    """Print the configuration reference, or rewrite it inside a Markdown file."""
    from qwenvl_serve.config_docs import render_reference, replace_reference

    reference = render_reference()
    if args.update is None:
        print(reference, end="")
        return 0
    document: Path = args.update
    try:
        document.write_text(replace_reference(document.read_text(encoding="utf-8"), reference))
    except OSError as exc:
        raise UserError(f"cannot update {document}: {exc.strerror}") from None
    except ValueError as exc:  # not UTF-8, or no reference markers
        raise UserError(f"cannot update {document}: {exc}") from None
    return 0


TINY_MODEL_HELP = (
    "write a tiny random-weight Qwen3-VL checkpoint (real architecture, tokenizer and image "
    "processor; about 20 M parameters). Its text output is random: it exists so that everything "
    "except the words can run offline, on a CPU."
)


def register_core(commands: Subcommands) -> None:
    """serve, args, make-tiny-model and config-reference."""
    serve = commands.add_parser("serve", help="run the server in the foreground")
    add_config_options(serve)
    serve.set_defaults(handler=cmd_serve)

    show = commands.add_parser("args", help="print the vLLM command line and environment")
    add_config_options(show)
    show.set_defaults(handler=cmd_args)

    tiny = commands.add_parser("make-tiny-model", help=TINY_MODEL_HELP, description=TINY_MODEL_HELP)
    tiny.add_argument("directory", type=Path, help="where to write the checkpoint")
    tiny.set_defaults(handler=cmd_make_tiny_model)

    reference = commands.add_parser(
        "config-reference", help="print the configuration reference as Markdown"
    )
    reference.add_argument(
        "--update",
        type=Path,
        metavar="FILE",
        help="replace the reference between the markers in FILE (e.g. README.md) instead",
    )
    reference.set_defaults(handler=cmd_config_reference)


# One entry per feature; each adds its subcommands with `commands.add_parser(...)` and
# sets `handler` to a function (argparse.Namespace) -> exit status.
SUBCOMMANDS: tuple[Callable[[Subcommands], None], ...] = (
    register_core,
    register_bench,
    register_usage,
    register_caption,
    register_render,
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="qwenvl-serve", description="Serve Qwen3-VL models through vLLM from one YAML config."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in SUBCOMMANDS:
        register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``qwenvl-serve`` console script."""
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except UserError as exc:
        print(f"qwenvl-serve: {exc.user_message()}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
