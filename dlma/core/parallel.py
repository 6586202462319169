"""Data parallelism for the model stages (generate, score, evaluate): the same batches as
one process, dealt round-robin to the processes that `torchrun` or `accelerate launch`
started, and gathered back in order on every process.

Dealing whole batches (not rows) keeps every batch, and so every kernel call, exactly what
a single process computes: on CPU the gathered table is byte-equal to the single-process
one (tested with 2 gloo processes). accelerate's PartialState is the process group (gloo on
CPU, NCCL on GPU); it is only created when the launcher set WORLD_SIZE > 1, so a plain
`python -m stages.x` never touches torch.distributed.
"""

from __future__ import annotations

import logging
import os
from typing import Callable, TypeVar

R = TypeVar("R")
log = logging.getLogger(__name__)


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def _state():
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def process_index() -> int:
    return _state().process_index if world_size() > 1 else 0


def is_main_process() -> bool:
    return process_index() == 0


def local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


def map_batches(batches: list[list[int]], run: Callable[[list[int]], list[R]]) -> list[tuple[list[int], list[R]]]:
    """(batch, run(batch)) for every batch, in batch order. With several processes, process
    r runs batches r, r + n, ... and the results are gathered on every process."""
    if world_size() == 1:
        return [(batch, run(batch)) for batch in batches]
    from accelerate.utils import gather_object

    state = _state()
    positions = range(state.process_index, len(batches), state.num_processes)
    log.info("process %d of %d runs %d of %d batches", state.process_index, state.num_processes, len(positions), len(batches))
    mine = [(position, batches[position], run(batches[position])) for position in positions]
    gathered = gather_object(mine)  # a flat list of every process's items
    return [(batch, result) for _, batch, result in sorted(gathered, key=lambda item: item[0])]


def rows_of_this_process(batches: list[list[int]]) -> int:
    """How many rows this process runs (its progress bar's total)."""
    return sum(len(batch) for batch in batches[process_index()::world_size()])
