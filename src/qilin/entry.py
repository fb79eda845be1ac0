"""Running a parsed command the way every qilin entry point does: logging, the one-line user error
(exit 2), the resume hint on Ctrl-C. `qilin` (qilin.cli) and the standalone sub-CLIs (`python -m
qilin.data.cli`, `python -m qilin.rag.cli`) all call `run_cli`, so none of them imports another's main.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

from qilin.errors import QilinError


def run_cli(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S",
                        stream=sys.stderr)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    try:
        return args.func(args) or 0
    except QilinError as e:
        print(f"qilin: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("qilin: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
