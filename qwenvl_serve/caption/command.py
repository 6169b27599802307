"""``qwenvl-serve caption PATH...``: its options; the run itself is in :mod:`.run`."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path
from typing import Any

from qwenvl_serve.caption.prompts import LANGUAGES, STYLES
from qwenvl_serve.caption.summary import summary_line

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
API_KEY_VARIABLES = ("QWENVL_API_KEY", "OPENAI_API_KEY")
DEFAULT_GROUP_SIZE = 4  # the servers' default limit of images per request

DESCRIPTION = """\
Caption image files through a qwenvl-serve (or any OpenAI-compatible) server.
Each image is one request, or with --group the images of one directory go together
in one request for a joint answer. Results are appended to --out (JSON Lines or CSV)
as they arrive; running again with the same --out skips the images already captioned
and retries the ones that failed. Requests that get 429, 502, 503 or 504 or a
connection error are retried with backoff, waiting as long as Retry-After says.
"""


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must not be negative: {text}")
    return value


def _seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def _temperature(text: str) -> float:
    value = float(text)
    if not 0 <= value <= 2:
        raise argparse.ArgumentTypeError(f"must be between 0 and 2: {text}")
    return value


def add_caption_arguments(parser: argparse.ArgumentParser) -> None:
    """The caption command's options."""
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH", help="images or folders")
    parser.add_argument(
        "-r", "--recursive", action="store_true", help="also look in subdirectories"
    )
    prompt = parser.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT", help="your own prompt")
    prompt.add_argument(
        "--style",
        choices=STYLES,
        default="detailed",
        help="a built-in prompt (default: %(default)s)",
    )
    parser.add_argument(
        "--lang", choices=LANGUAGES, default="en", help="language of --style (default: en)"
    )
    parser.add_argument(
        "--base-url",
        default=DEFAULT_BASE_URL,
        help="the API's base URL, with /v1 (default: %(default)s)",
    )
    parser.add_argument(
        "--api-key",
        help=f"API key (default: ${API_KEY_VARIABLES[0]}, then ${API_KEY_VARIABLES[1]})",
    )
    parser.add_argument("--model", help="model name (default: the first the server lists)")
    parser.add_argument(
        "--max-tokens", type=_positive_int, default=512, help="answer length cap (default: 512)"
    )
    parser.add_argument(
        "--temperature", type=_temperature, help="sampling temperature (default: the model's)"
    )
    parser.add_argument(
        "--concurrency",
        type=_positive_int,
        default=4,
        metavar="N",
        help="requests in flight at once (default: 4)",
    )
    parser.add_argument(
        "--out",
        type=Path,
        metavar="FILE",
        help="FILE.jsonl or FILE.csv: results, also what a re-run resumes from "
        "(default: JSON Lines on stdout, no resuming)",
    )
    parser.add_argument(
        "--group",
        action="store_true",
        help="send the images of each directory together in one request, for one joint "
        "answer (e.g. several photos of one product, or of one day told as one story)",
    )
    parser.add_argument(
        "--group-size",
        type=_positive_int,
        default=DEFAULT_GROUP_SIZE,
        metavar="N",
        help="with --group, at most N images per request; a bigger directory is sent in runs "
        "of N (default: %(default)s, the server's default limit of images per request)",
    )
    parser.add_argument(
        "--timeout", type=_seconds, default=300.0, help="seconds per request (default: 300)"
    )
    parser.add_argument(
        "--retries",
        type=_non_negative_int,
        default=5,
        help="retries per request on 429/502/503/504 and connection errors (default: 5)",
    )
    parser.add_argument("--fail-on-error", action="store_true", help="exit 1 if any image failed")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def cmd_caption(args: argparse.Namespace) -> int:
    """Caption the images and print the summary; exit 1 on failures with --fail-on-error."""
    from qwenvl_serve.caption.run import CaptionOptions, run_caption

    tally, seconds = asyncio.run(run_caption(CaptionOptions.from_args(args), time.monotonic()))
    print(summary_line(tally, seconds), file=sys.stderr)
    return 1 if args.fail_on_error and tally.failed else 0


def register_caption(commands: Any) -> None:
    """Add ``caption`` to the command line."""
    parser = commands.add_parser(
        "caption",
        help="caption image files in bulk through the API",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_caption_arguments(parser)
    parser.set_defaults(handler=cmd_caption)
