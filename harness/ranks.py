"""The processes of one run under a multi-process launch, and who does what.

The rule is written down in docs/internals/architecture.md#several-processes-the-main-process-decides.

``torchrun --nproc_per_node K -m harness run ...`` and ``accelerate launch
--num_processes K -m harness run ...`` start K copies of the same command; they
find each other through the launcher's ``RANK``/``WORLD_SIZE`` variables. Every
copy runs the same loop. The **main process** (rank 0) alone samples,
selects, charges the ledger, buys labels, evaluates, checkpoints and writes
the leaderboard, and hands each result to the others
(:meth:`Ranks.main_only`); all processes score (the log-prob forwards, split
by prompt: :meth:`Ranks.split`) and train (the trainer's own data
parallelism: TRL shards the pairs across the processes and averages the
gradients, so every process ends the step with the same weights). A paid
judge is therefore asked once, and a run is one leaderboard row, whatever K.

With one process every method is a plain function call and nothing is
imported: the single-process loop is exactly what it was.

When the main process fails at a step it hands the failure on, so the others
stop at the same step with :class:`MainProcessStopped` instead of waiting for
a result that will never come.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")


class MainProcessStopped(Exception):
    """Raised on every other process when the main process stopped the run at a step (or, in a step the
    processes share, when another process failed: the message names its rank).

    ``kind`` is what stopped it: ``"awaiting_labels"`` (an external annotator
    took the pairs), or ``"failed"``; ``message`` is the main process's error.
    """

    def __init__(self, kind: str, message: str):
        super().__init__(f"the main process stopped the run ({kind}): {message}")
        self.kind = kind
        self.message = message


@dataclass(frozen=True)
class Ranks:
    """This process's place among the run's processes: ``rank`` of ``size``, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def parallel(self) -> bool:
        return self.size > 1

    @classmethod
    def from_environment(cls, environ: dict[str, str] | None = None) -> Ranks:
        """The ranks a launcher set (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``); one process when unset.

        With more than one process this joins the launcher's process group
        (NCCL when CUDA is available, else gloo, so it also runs on CPUs) and
        makes this process's GPU, ``cuda:LOCAL_RANK``, the current device, so
        ``-o testbed.device=cuda`` puts each process's models on its own GPU.
        """
        env = os.environ if environ is None else environ
        size = launched_processes(env)
        if size <= 1:
            return cls()
        ranks = cls(rank=launched_rank(env), size=size, local_rank=int(env.get("LOCAL_RANK", "0")))
        import torch
        import torch.distributed as dist

        if torch.cuda.is_available():
            torch.cuda.set_device(ranks.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
        return ranks

    # -- handing results from the main process to the others ------------------------------------

    def main_only(self, work: Callable[[], T]) -> T:
        """``work()`` on the main process; its result (or its failure) on every process."""
        if not self.parallel:
            return work()
        if self.is_main:
            try:
                result = work()
            except Exception as exc:
                self._broadcast(("stop", _stop_kind(exc), f"{type(exc).__name__}: {exc}"))
                raise
            self._broadcast(("ok", result))
            return result
        message = self._broadcast(None)
        if message[0] == "stop":
            raise MainProcessStopped(message[1], message[2])
        return message[1]

    def share(self, value: T) -> T:
        """The main process's ``value`` on every process (the others pass anything, e.g. None)."""
        return self.main_only(lambda: value)

    def _broadcast(self, message: Any) -> Any:
        import torch.distributed as dist

        box = [message]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    # -- splitting work by rows -----------------------------------------------------------------

    def rows(self, n: int) -> slice:
        """This process's share of ``n`` rows: contiguous, sizes differing by at most one."""
        bounds = np.linspace(0, n, self.size + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def gather(self, n: int, work: Callable[[slice], T]) -> list[T]:
        """``work(rows)`` on each process's share of ``n`` rows; every share's result, in row order, on every
        process (a process with no rows, when there are fewer rows than processes, contributes nothing). When
        ``work`` fails on one process, that process raises its error and every other one
        :class:`MainProcessStopped` naming it, instead of waiting for a share that never comes."""
        if not self.parallel or n == 0:
            return [work(slice(0, n))]
        import torch.distributed as dist

        mine = self.rows(n)
        failure: Exception | None = None
        try:
            message = ("ok", work(mine) if mine.stop > mine.start else None)  # fewer rows than processes: some idle
        except Exception as exc:  # every process must still reach the gather, or the others wait forever
            failure = exc
            message = ("stop", _stop_kind(exc), f"rank {self.rank}: {type(exc).__name__}: {exc}")
        messages: list[Any] = [None] * self.size
        dist.all_gather_object(messages, message)
        if failure is not None:
            raise failure
        stopped = next((m for m in messages if m[0] == "stop"), None)
        if stopped is not None:
            raise MainProcessStopped(stopped[1], stopped[2])
        return [m[1] for m in messages if m[1] is not None]

    def split(self, n: int, work: Callable[[slice], np.ndarray]) -> np.ndarray:
        """``work(rows)`` on each process's share of ``n`` rows, concatenated in row order on every process."""
        if not self.parallel or n == 0:
            return work(slice(0, n))  # one process: exactly what work returns
        return np.concatenate(self.gather(n, work), axis=0)

    def barrier(self) -> None:
        if self.parallel:
            import torch.distributed as dist

            dist.barrier()


SINGLE = Ranks()
"""One process: every method is a plain call."""


def launched_processes(environ: dict[str, str] | None = None) -> int:
    """How many processes the launcher started (``WORLD_SIZE``; 1 without a launcher), without joining them."""
    return int((os.environ if environ is None else environ).get("WORLD_SIZE", "1") or 1)


def launched_rank(environ: dict[str, str] | None = None) -> int:
    """This process's rank among them (``RANK``; 0 without a launcher), without joining them."""
    return int((os.environ if environ is None else environ).get("RANK", "0") or 0)


def _stop_kind(exc: BaseException) -> str:
    from harness.labelling import AwaitingLabels

    return "awaiting_labels" if isinstance(exc, AwaitingLabels) else "failed"
