"""Multi-process launches (`accelerate launch`, `torchrun`): which process does what.

A training stage runs in every process: the Trainer splits the batches and keeps the copies of the
model in step (DDP, DeepSpeed or FSDP, as the accelerate profile says). Everything else happens once,
in the main process, while the others wait: the files of a run folder, the saved model, data
preparation, retrieval indexes, evaluation and the report. Started without a launcher there is one
process, every function here is a no-op, and nothing imports accelerate.

The others wait at a barrier, and evaluating a 7B model in the main process can outlast the default
30 minutes of a collective, so the process group is created with `TIMEOUT_S` (6 hours; the
environment variable QILIN_DIST_TIMEOUT_S changes it) before the Trainer would create it with its own.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

T = TypeVar("T")

TIMEOUT_S = int(os.environ.get("QILIN_DIST_TIMEOUT_S", 6 * 3600))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def setup() -> None:
    """Create the process group with qilin's timeout (first caller wins: call before any Trainer)."""
    if world_size() > 1:
        import torch
        from accelerate import PartialState

        # without a GPU, accelerate treats the launch as multi-process only when told cpu=True (gloo)
        PartialState(cpu=not torch.cuda.is_available(), timeout=timedelta(seconds=TIMEOUT_S))


def barrier() -> None:
    """Every process waits here until all have arrived."""
    if world_size() > 1:
        setup()
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def on_main(fn: Callable[..., T], *args, **kwargs) -> T | None:
    """`fn(*args, **kwargs)` in the main process only, every process waiting until it is done; its
    result in the main process, None in the others."""
    result = fn(*args, **kwargs) if is_main() else None
    barrier()
    return result
