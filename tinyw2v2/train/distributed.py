"""Data parallelism: N processes train one model, each on its share of every update's batch.

    mpiexec -n 2 tinyw2v2 pretrain ...          (docs/distributed.md: what it computes, why, how to launch)

One update on rank r of N, each rank with K micro-batches (``--accumulate K``):

    x = sampler(step)                        the update's whole batch, drawn from (seed, step): the same on every rank
    x_j, j = rK, ..., rK + K - 1             this rank's micro-batches: row blocks j of the NK blocks of x
    M = sum over ranks of masked frames      all-reduce of one integer, before any backward
    for each x_j: (L(x_j) / M).backward()    p.grad accumulates this rank's share of the gradient
    g = sum over ranks of p.grad             all-reduce of one flat buffer (``train/allreduce.py``)
    clip(g), AdamW step                      the same numbers on every rank: the replicas stay identical

L is a sum over masked frames, so dividing every micro-batch's sum by the *global* M makes g the gradient of the
whole batch's mean loss, as one process holding the whole batch computes it (the mean of per-rank means would weigh
a frame of a rank with few masked frames more).

Only rank 0 writes (the log, evaluations, plots, checkpoints); every rank reads a checkpoint on ``--resume``. What a
rank fails to read is settled before training (``collective``, ``keep_common``), so that all ranks train on the same
utterances. An error raised by every rank stops them all cleanly; an error on some ranks only ends the job through
``MPI_Abort`` with its message, instead of leaving the others waiting in a collective for ever.

A process started without an MPI launcher is a run of one rank (``DataParallel``): mpi4py is not imported, nothing is
communicated, and the arithmetic is exactly the single-process loop's.
"""
from __future__ import annotations

import contextlib
import os
import sys
import time
import traceback
import zlib
from dataclasses import dataclass

import numpy as np

from .. import backend
from .allreduce import GradientSum
from .common import TrainingError, arg

# how long a failing rank waits for all the others to fail at the same point (then they all stop cleanly) before it
# ends the job with MPI_Abort
FAILURE_WAIT_SECONDS = 10.0

# the environment variables by which MPI launchers tell a process the job's size and its rank (MPICH, Intel MPI and
# Slurm's PMI; Open MPI; MVAPICH)
LAUNCHER_SIZE = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")
LAUNCHER_RANK = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")


@dataclass
class DataParallelArgs:
    """The data-parallel options of a run (a base of PretrainArgs and FinetuneArgs)."""
    accumulate: int = arg(1, "micro-batches per update (fairseq's --update-freq): an update's batch is ranks x "
                             "accumulate x --batch-seconds")
    allreduce: str = arg("auto", "how ranks under mpiexec sum the gradients: auto (nccl when every rank has a GPU of "
                                 "its own, else mpi) | mpi (on the host; a GPU's buffer is staged through it) | "
                                 "mpi-device (CUDA-aware MPI) | nccl")


def launched_size() -> int:
    """The number of processes the MPI launcher started (1 without one), read from its environment variables."""
    for name in LAUNCHER_SIZE:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 1


def launched_rank() -> int:
    """This process's rank in the launcher's job (0 without one)."""
    for name in LAUNCHER_RANK:
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name])
    return 0


class DataParallel:
    """A process's place in a data-parallel run; this class is the run of one process (rank 0 of 1), where every
    collective is the identity. ``MPIDataParallel`` is rank r of N."""

    rank, world = 0, 1

    def __init__(self, accumulate: int = 1, device: str = "cpu"):
        if int(accumulate) < 1:
            raise TrainingError(f"--accumulate must be at least 1, got {accumulate}")
        self.accumulate = int(accumulate)
        self.device = device           # this rank's device
        self.transport = None          # how gradients travel between ranks (``MPIDataParallel``)

    @property
    def main(self) -> bool:
        """Rank 0: the one that logs, evaluates, plots and writes checkpoints."""
        return self.rank == 0

    @property
    def micro_batches(self) -> int:
        """Micro-batches of one update, over all ranks: ranks x accumulate."""
        return self.world * self.accumulate

    def shards(self) -> range:
        """The indices j of this rank's micro-batches among the update's ``micro_batches``."""
        return range(self.rank * self.accumulate, (self.rank + 1) * self.accumulate)

    def share(self, batch: np.ndarray) -> list:
        """[(j, rows)]: this rank's micro-batches of the update's batch (B, ...), block j of ``micro_batches``
        near-equal blocks of rows (the batch itself when an update is one micro-batch)."""
        if self.micro_batches == 1:
            return [(0, batch)]
        blocks = np.array_split(batch, self.micro_batches)
        return [(j, blocks[j]) for j in self.shards()]

    def seed(self, seed: int, step: int, shard: int) -> list:
        """The seed of micro-batch ``shard``'s draws (masks, negatives, LayerDrop, dropout, Gumbel noise): (seed, step,
        1) when an update is one micro-batch, as a single process draws, else (seed, step, 1, shard). A draw depends
        on the micro-batch, not on the rank that computes it: K processes draw what one process with
        ``--accumulate K`` draws."""
        return [seed, step, 1] if self.micro_batches == 1 else [seed, step, 1, shard]

    # --- collectives: identities in a run of one ---------------------------------------------------------------
    def sum(self, value):
        """The sum over ranks of a number or a small host array."""
        return value

    def max(self, value):
        """The largest over ranks of a number."""
        return value

    def sum_gradients(self, params) -> None:
        """Replace every ``p.grad`` by its sum over ranks."""

    def collective(self, fn, *args, main_only: bool = False, **kwargs):
        """``fn(*args, **kwargs)`` on every rank (on rank 0 alone with ``main_only``, the others getting None); an
        exception on any rank is raised on every rank, naming the rank."""
        return fn(*args, **kwargs) if self.main or not main_only else None

    def keep_common(self, items: list, ids: list, where: str) -> list:
        """The items (ids[i] naming items[i]) that every rank has: a file one rank could not read is left out by
        all of them."""
        return items

    def check_replicas(self, params, step: int) -> None:
        """Raise if the parameters differ between ranks."""

    def describe(self, unit: str, per_micro_batch: int) -> str:
        """One line on what an update is made of."""
        if self.accumulate == 1:
            return ""
        return (f"gradient accumulation: {self.accumulate} micro-batches of {per_micro_batch} {unit} per update "
                f"({self.accumulate * per_micro_batch} {unit})")


class MPIDataParallel(DataParallel):
    """Rank r of an MPI job of N processes (``mpi4py``'s ``COMM_WORLD``).

    ``device``: 'cuda' alone spreads the ranks of a machine over its GPUs (local rank modulo the GPUs seen); an
    explicit 'cuda:N', 'cpu' or 'emulated' is taken as it is. ``allreduce``: see ``DataParallelArgs``.
    """

    def __init__(self, MPI, accumulate: int, device: str, allreduce: str = "auto"):
        super().__init__(accumulate, device)
        self.MPI, self.comm = MPI, MPI.COMM_WORLD
        self.rank, self.world = self.comm.Get_rank(), self.comm.Get_size()
        self.local = self.comm.Split_type(MPI.COMM_TYPE_SHARED)          # the ranks on this machine
        gpus = backend.device_count()
        if device == "cuda" and gpus > 0:
            self.device = f"cuda:{self.local.Get_rank() % gpus}"
        backend.normalize_device(self.device)
        self.transport = self._transport(allreduce)
        nccl = None
        if self.transport == "nccl":
            backend.use_device(self.device)
            nccl = backend.nccl_communicator(self.world, self.rank)
        self.gradients = GradientSum(self.comm, MPI, self.transport, nccl)

    def _transport(self, choice: str) -> str:
        """mpi, mpi-device or nccl, the same on every rank (decided from values all ranks share)."""
        if choice not in ("auto", "mpi", "mpi-device", "nccl"):
            raise TrainingError(f"unknown --allreduce {choice!r}: use auto, mpi, mpi-device or nccl")
        on_gpu = self.comm.allreduce(self.device.startswith("cuda"), op=self.MPI.LAND)
        if not on_gpu:
            if choice in ("mpi-device", "nccl"):
                raise TrainingError(f"--allreduce {choice} needs every rank on a GPU (--device cuda)")
            return "mpi"
        here = self.local.allgather(self.device)
        shared = self.comm.allreduce(len(set(here)) < len(here), op=self.MPI.LOR)    # two ranks on one GPU
        nccl = self.comm.allreduce(backend.nccl_available(), op=self.MPI.LAND)
        if choice == "auto":
            return "nccl" if nccl and not shared else "mpi"
        if choice == "nccl" and (shared or not nccl):
            raise TrainingError("--allreduce nccl: " + ("ranks share a GPU (NCCL needs one per rank); use "
                                                        "--allreduce mpi" if shared else "CuPy has no NCCL here"))
        return choice

    # --- collectives ---------------------------------------------------------------------------------------------
    def sum(self, value):
        return self.comm.allreduce(value, op=self.MPI.SUM)

    def max(self, value):
        return self.comm.allreduce(value, op=self.MPI.MAX)

    def sum_gradients(self, params) -> None:
        self.gradients(params)

    def collective(self, fn, *args, main_only: bool = False, **kwargs):
        result, error = None, None
        if self.main or not main_only:
            try:
                result = fn(*args, **kwargs)
            except Exception as e:                                         # reported to every rank below
                error = str(e) or type(e).__name__
        errors = self.comm.allgather(error)
        failed = [(r, m) for r, m in enumerate(errors) if m is not None]
        if failed:
            if len(failed) == self.world and len({m for _, m in failed}) == 1:
                raise TrainingError(failed[0][1])                          # the same error on every rank
            raise TrainingError("; ".join(f"rank {r} of {self.world}: {m}" for r, m in failed))
        return result

    def keep_common(self, items: list, ids: list, where: str) -> list:
        everyone = self.comm.allgather(list(ids))
        if all(theirs == everyone[0] for theirs in everyone):
            return items
        common = set.intersection(*map(set, everyone))
        if self.main:
            for r, theirs in enumerate(everyone):
                lost = sorted(set().union(*everyone) - set(theirs))
                if lost:
                    print(f"{where}: rank {r} could not use {len(lost)} file(s) that other ranks read "
                          f"({', '.join(lost[:3])}{', ...' if len(lost) > 3 else ''}); every rank leaves them out")
        return [item for item, i in zip(items, ids) if i in common]

    def check_replicas(self, params, step: int) -> None:
        digest = 0
        for p in params:
            digest = zlib.crc32(np.ascontiguousarray(backend.to_numpy(p.data)).tobytes(), digest)
        digests = self.comm.allgather(digest)
        if len(set(digests)) > 1:
            differ = [r for r, d in enumerate(digests) if d != digests[0]]
            raise TrainingError(f"after step {step} the parameters of rank(s) {differ} differ from rank 0's: the "
                                f"ranks no longer train one model (an all-reduce that does not give every rank the "
                                f"same sum?)")

    def describe(self, unit: str, per_micro_batch: int) -> str:
        how = {"mpi": "MPI" + (" through the host" if self.device != "cpu" else ""),
               "mpi-device": "CUDA-aware MPI", "nccl": "NCCL"}[self.transport]
        return (f"data parallel: {self.world} ranks x {self.accumulate} micro-batch(es) of {per_micro_batch} {unit} "
                f"per update ({self.micro_batches * per_micro_batch} {unit}); gradients summed by {how}; "
                f"rank 0 on {self.device}")


@contextlib.contextmanager
def data_parallel(args):
    """The ``DataParallel`` of this process for a run with ``args`` (``accumulate``, ``allreduce``, ``device``):
    rank r of N under an MPI launcher, else the run of one. Under MPI an exception that every rank raises stops them
    all (each re-raises it); one raised on some ranks only ends the job with ``MPI_Abort`` after printing it."""
    world = launched_size()
    if world == 1:
        yield DataParallel(args.accumulate, args.device)
        return
    try:
        from mpi4py import MPI
    except ImportError:
        raise TrainingError(f"started as rank {launched_rank()} of {world} by an MPI launcher, but mpi4py is not "
                            "installed: pip install 'tinyw2v2[distributed]'") from None
    failures = MPI.COMM_WORLD.Dup()     # a channel of its own: a failing rank never matches a collective of the run
    try:
        yield MPIDataParallel(MPI, args.accumulate, args.device, args.allreduce)
    except BaseException as e:
        if not _all_failed(failures):
            _abort(MPI, e)
        raise


def _all_failed(failures) -> bool:
    """True when every rank reaches this point (each after an exception) within ``FAILURE_WAIT_SECONDS``."""
    request = failures.Ibarrier()
    deadline = time.monotonic() + FAILURE_WAIT_SECONDS
    while not request.Test():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def _abort(MPI, error: BaseException) -> None:
    """Print what ended this rank, then end every rank of the job."""
    comm = MPI.COMM_WORLD
    if isinstance(error, TrainingError):
        what = f"error: {error}"
    else:
        what = "".join(traceback.format_exception(type(error), error, error.__traceback__)).rstrip()
    print(f"{what}\nrank {comm.Get_rank()} of {comm.Get_size()} stopped with this error and the other ranks did not "
          f"(they would wait for it for ever): ending the job with MPI_Abort", file=sys.stderr, flush=True)
    comm.Abort(2 if isinstance(error, TrainingError) else 1)
    os._exit(1)          # MPI_Abort may return before the launcher ends this process


__all__ = ["DataParallel", "DataParallelArgs", "MPIDataParallel", "data_parallel", "launched_rank", "launched_size"]
