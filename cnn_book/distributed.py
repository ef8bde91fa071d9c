"""Data parallelism: the same ``fit`` on N processes, one per device, started by ``torchrun``.

    torchrun --nproc-per-node 4 -m cnn_book.train --recipe resnet18

``torchrun`` starts N copies of the program and tells each who it is through the environment
(``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). ``fit`` reads it
(``world()``), joins the process group (nccl between GPUs, gloo between CPU processes) and then
changes only four things, all here, behind ``Group`` (what ``fit`` asks: which device is this
process's, which slice of a batch is its own, what is summed at the end of an epoch, who prints):

- every process holds the whole model, wrapped in ``DistributedDataParallel``, which averages the
  gradients over the processes (an all-reduce) during the backward pass, so the weights stay equal;
- every process reads the same shuffled order (the same seed) and keeps its own slice of each
  global batch (``local_batch``): the slices are disjoint and cover the epoch. ``batch_size`` is
  per process, so one step sees ``N * batch_size`` items, as the one-process run with that batch;
- the sums behind the metrics are added over the processes (``all_reduce_sums``);
- only rank 0 prints (and the command line writes only from rank 0).

Every process prepares the whole global batch and keeps its slice. The data of this book sit in
memory on the device, where preparing a batch costs little next to the model's step, and this
way the random augmentation, binarisation and masking are drawn exactly as in the one-process
run, which makes the two runs comparable step by step. A loader that reads files from disk would
read only its own shard instead (``torch.utils.data.DistributedSampler``).
"""

from __future__ import annotations

import argparse
import datetime
import functools
import json
import operator
import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from .device import default_device, describe_device
from .settings import dist_timeout, fold

__all__ = ["Group", "World", "world", "device_for", "init", "local_batch", "shard_batches", "all_reduce_sums",
           "steps_per_epoch", "wrap", "unused_parameters", "broadcast_buffers", "ring_all_reduce_bytes",
           "time_all_reduce"]


@dataclass(frozen=True)
class World:
    """Who this process is: ``rank`` among ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that prints and writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1


def world(environ: dict | None = None) -> World:
    """This process's place, from the variables ``torchrun`` sets; one process of one without them."""
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env:
        return World()
    try:
        w = World(int(env.get("RANK", 0)), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", 0)))
    except ValueError as e:
        raise ValueError(f"RANK, WORLD_SIZE and LOCAL_RANK must be whole numbers (torchrun sets them): {e}") from None
    if w.size < 1 or not 0 <= w.rank < w.size:
        raise ValueError(f"RANK={w.rank} does not fit WORLD_SIZE={w.size}: a rank runs from 0 to WORLD_SIZE - 1")
    return w


def device_for(w: World, device: torch.device | str | None = None) -> torch.device:
    """The device this process trains on: ``device`` if given ("cuda" under torchrun meaning the
    process's own GPU, ``LOCAL_RANK``); else under torchrun the GPU of ``LOCAL_RANK`` (the CPU on a
    machine without one); else ``default_device()``."""
    if device is None and w.distributed:  # one GPU per process, by its rank on the machine
        gpus = torch.cuda.device_count()
        if gpus and w.local_rank >= gpus:
            raise ValueError(f"process {w.local_rank} of this machine has no GPU of its own: the machine has "
                             f"{gpus}; start at most {gpus} processes (torchrun --nproc-per-node {gpus}), or "
                             "train on the CPU (device='cpu')")
        device = torch.device("cuda", w.local_rank) if gpus else torch.device("cpu")
    device = torch.device(device) if device is not None else default_device()
    if w.distributed and device.type == "cuda" and device.index is None:  # "cuda": this process's own GPU
        device = torch.device("cuda", w.local_rank)
    return device


def init(w: World, device: torch.device) -> None:
    """Join the process group once: nccl between GPUs (NVIDIA's collective library), gloo on CPUs.
    ``MASTER_ADDR`` and ``MASTER_PORT`` (set by torchrun) say where rank 0 waits for the others."""
    if not w.distributed or dist.is_initialized():
        return
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if name not in os.environ:
            raise ValueError(f"WORLD_SIZE={w.size} but {name} is not set: start the run with torchrun, "
                             "which sets both")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    seconds = dist_timeout()
    try:
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=w.rank, world_size=w.size,
                                device_id=device if device.type == "cuda" else None,
                                timeout=datetime.timedelta(seconds=seconds))
    except dist.DistError as e:
        where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
        raise RuntimeError(
            f"process {w.rank} of WORLD_SIZE={w.size} waited {seconds:g} s for the others at {where} and not all "
            f"of them came ({str(e).splitlines()[0]}). A WORLD_SIZE left in the environment, or processes started "
            f"by hand? Start every process with torchrun (torchrun --nproc-per-node N ...), or unset WORLD_SIZE "
            f"to train in one process; CNN_BOOK_DIST_TIMEOUT sets how long to wait.") from None


def wrap(model: nn.Module, w: World, device: torch.device, find_unused: bool) -> nn.Module:
    """The model every step runs through: the model itself for one process, else the model in
    ``DistributedDataParallel``, which first copies rank 0's weights to every process, then
    all-reduces the gradients in buckets while the backward pass is still running.
    ``find_unused``: some parameters get no gradient from the loss (BERT's pooler in pre-training);
    DDP must then look for them after every forward pass instead of waiting for them forever."""
    if not w.distributed:
        return model
    return nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None,
                                               find_unused_parameters=find_unused)


def unused_parameters(model: nn.Module, loss: torch.Tensor) -> list[str]:
    """The names of the trainable parameters that ``loss`` does not reach (no gradient flows to
    them), found without a backward pass by walking the autograd graph from ``loss``."""
    reached, stack, seen = set(), [loss.grad_fn], set()
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        if hasattr(fn, "variable"):  # AccumulateGrad: a leaf tensor, a parameter
            reached.add(id(fn.variable))
        stack.extend(f for f, _ in fn.next_functions)
    return [n for n, p in model.named_parameters() if p.requires_grad and id(p) not in reached]


def _part(v, start: int, stop: int):
    if isinstance(v, (torch.Tensor, list)):
        return v[start:stop]
    if isinstance(v, tuple):
        return tuple(_part(u, start, stop) for u in v)
    raise TypeError(f"a batch holds tensors, lists or tuples of them, not {type(v).__name__}")


def local_batch(batch: tuple, w: World) -> tuple:
    """This rank's slice of a global batch: N near-equal consecutive parts (the first
    ``n % N`` one item larger), part ``rank`` of it, of the inputs and of the targets alike."""
    n = len(batch[0])
    start = w.rank * (n // w.size) + min(w.rank, n % w.size)
    stop = start + n // w.size + (w.rank < n % w.size)
    return tuple(_part(v, start, stop) for v in batch)


def _cat(a, b):
    if isinstance(a, torch.Tensor):
        return torch.cat([a, b])
    if isinstance(a, list):
        return a + b
    return tuple(_cat(u, v) for u, v in zip(a, b, strict=True))


def shard_batches(batches, w: World):
    """This rank's slices of the global ``batches``. A last global batch too small to give every
    rank 2 items (a batch norm needs 2) is merged into the one before it, so that every rank takes
    the same number of steps: DDP's all-reduce waits for all of them at every step."""
    if not w.distributed:
        yield from batches
        return
    held = []  # two batches are held back: the last may have to join the one before it
    for batch in batches:
        held.append(batch)
        if len(held) == 3:
            yield local_batch(held.pop(0), w)
    if len(held) == 2 and len(held[1][0]) < 2 * w.size:
        held = [tuple(_cat(a, b) for a, b in zip(*held, strict=True))]
    for batch in held:
        yield local_batch(batch, w)


def steps_per_epoch(n: int, batch_size: int, w: World) -> int:
    """Steps of one epoch over ``n`` items, ``batch_size`` per process: a last global batch of one
    item, or too small to give every process 2, joins the one before it."""
    global_batch = batch_size * w.size
    steps = -(-n // global_batch)
    last = n - (steps - 1) * global_batch
    small = last < 2 * w.size if w.distributed else (last == 1 and batch_size > 1)
    return max(1, steps - (steps > 1 and small))


def broadcast_buffers(model: nn.Module, w: World) -> None:
    """Rank 0's buffers (batch norm's running statistics) copied to every process. DDP sends them
    at the start of every training forward pass, but each process then updates its own copy with
    its own slice: without this, every process would score the test set with other statistics."""
    if w.distributed:
        for b in model.buffers():
            dist.broadcast(b, 0)


def all_reduce_sums(sums: dict, w: World) -> dict:
    """``sums`` added over the processes: tensors and numbers by an all-reduce, anything else
    (a task's lists of detections) gathered and added in rank order."""
    if not w.distributed:
        return sums
    # nccl reduces tensors on the GPU, gloo on the CPU
    device = torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else None
    out = {}
    for k, v in sums.items():
        if isinstance(v, (torch.Tensor, int, float)):
            t = v.detach().clone() if isinstance(v, torch.Tensor) else torch.tensor(v, dtype=torch.float64,
                                                                                    device=device)
            dist.all_reduce(t)  # a sum, by default
            out[k] = t if isinstance(v, torch.Tensor) else type(v)(t.item())
        else:
            gathered = [None] * w.size
            dist.all_gather_object(gathered, v)
            out[k] = functools.reduce(operator.add, gathered)
    return out


class Group:
    """This process and the others it trains with; one process alone is a group of one, for which
    every method does what a plain loop does. ``Group.start(device)`` reads torchrun's variables
    and joins the process group; ``fit`` asks it the four things that differ:

    - ``device``: this process's device (``device_for``);
    - ``shard(batches)``: this process's slice of every global batch of ``global_batch(b)`` items;
    - ``sum(sums)``: figures added over the processes (the epoch's sums, a window of steps);
    - ``say(...)``: print, from rank 0 only.
    """

    def __init__(self, w: World, device: torch.device) -> None:
        self.world, self.device = w, device

    @classmethod
    def start(cls, device: torch.device | str | None = None) -> Group:
        w = world()
        group = cls(w, device_for(w, device))
        init(w, group.device)
        return group

    @property
    def size(self) -> int:
        return self.world.size

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def main(self) -> bool:
        return self.world.main

    def say(self, *lines: str) -> None:
        """Print ``lines`` from rank 0; the other processes print nothing."""
        if self.main:
            for line in lines:
                print(fold(line))  # the page column: no sideways scroll on the website

    def describe(self) -> str:
        """'cpu (2 threads)', or 'cpu (2 threads) x 2 processes' under torchrun."""
        one = describe_device(self.device)
        return f"{one} x {self.size} processes" if self.world.distributed else one

    def global_batch(self, batch_size: int) -> int:
        return batch_size * self.size

    def check_sizes(self, n_train: int, n_test: int) -> None:
        if self.world.distributed and min(n_train, n_test) < 2 * self.size:
            raise ValueError(f"{self.size} processes need at least {2 * self.size} training and test items "
                             f"(2 each), got {n_train:,} and {n_test:,}")

    def steps_per_epoch(self, n: int, batch_size: int) -> int:
        return steps_per_epoch(n, batch_size, self.world)

    def shard(self, batches):
        return shard_batches(batches, self.world)

    def sum(self, sums: dict) -> dict:
        return all_reduce_sums(sums, self.world)

    def wrap(self, model: nn.Module, unused: Callable[[], list[str]]) -> tuple[nn.Module, bool]:
        """(what the steps run, whether DDP must look for parameters without a gradient): the model
        itself for one process; else DDP(model), ``unused()`` naming the parameters the loss leaves out."""
        find_unused = self.world.distributed and bool(unused())
        return wrap(model, self.world, self.device, find_unused), find_unused

    def end_epoch(self, model: nn.Module, losses: dict, sums: dict, counts: dict) -> tuple[dict, dict, dict]:
        """The epoch's sums over all processes; rank 0's batch-norm statistics copied to all."""
        if not self.world.distributed:
            return losses, sums, counts
        broadcast_buffers(model, self.world)
        return self.sum(losses), self.sum(sums), self.sum(counts)


def ring_all_reduce_bytes(numel: int, processes: int, bytes_per_value: int = 4) -> float:
    """Bytes each process sends (and receives) in a ring all-reduce of ``numel`` values: the tensor
    is cut into N chunks; N - 1 steps add them up around the ring (reduce-scatter), N - 1 more pass
    the sums on (all-gather): 2 (N - 1) / N of the tensor, almost twice its size for large N."""
    return 2 * (processes - 1) / processes * numel * bytes_per_value


def time_all_reduce(numels: list[int], repeats: int = 5) -> dict[int, float]:
    """Median seconds of one all-reduce of a float32 tensor of each size, in the running group."""
    out = {}
    for n in numels:
        t = torch.ones(n)
        dist.all_reduce(t)  # a first one, not timed: connections and buffers are set up
        times = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            dist.all_reduce(t)
            times.append(time.perf_counter() - t0)
        out[n] = statistics.median(times)
    return out


def main(argv: list[str] | None = None) -> None:
    """``torchrun --nproc-per-node N -m cnn_book.distributed --out times.json``: time all-reduces
    of float32 tensors from 1,000 to 33.5 million (2**25) values (gloo, the CPU); rank 0 writes the JSON."""
    parser = argparse.ArgumentParser(prog="python -m cnn_book.distributed", description=main.__doc__)
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-numel", type=int, default=2**25)
    args = parser.parse_args(argv)
    w = world()
    if not w.distributed:
        raise SystemExit("start it with torchrun, which starts the processes that talk: "
                         "torchrun --standalone --nproc-per-node 2 -m cnn_book.distributed --out times.json")
    init(w, torch.device("cpu"))
    numels = [n for n in (10**3, 10**4, 10**5, 10**6, 4 * 10**6, 16 * 10**6, 2**25) if n <= args.max_numel]
    times = time_all_reduce(numels)
    if w.main:
        with open(args.out, "w") as f:
            json.dump({"processes": w.size, "seconds": {str(k): v for k, v in times.items()}}, f)
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
