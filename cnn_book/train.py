"""Brief, honest training: one ``fit`` loop for every kind of chapter.

- What differs between kinds of work (the loss and its parts, the metrics, the checks) lives in a
  task (``cnn_book.tasks``); the data names its task, so ``fit(model, data, epochs)`` serves them all.
- The device is chosen automatically (cuda, then mps, then cpu) and the precision follows it
  (``precision_for``): bf16 autocast on CUDA compute capability 8.0 or higher, fp16 autocast with
  a GradScaler below that (Colab's T4), fp32 on CPU and MPS unless asked.
- channels_last memory layout on CUDA and CPU (20-30 % faster for the small CNNs of the first
  chapters on a 2-core CPU, measured). Data stay on the device (``cnn_book.data.ImageData``).
- Mistakes are caught before the first step (``check_setup``), in the reader's words.
- Every run prints the device, the precision, the wall time, the training images per second and
  the task's figures. Quick mode (``CNN_BOOK_QUICK=1``, what ``make test`` runs the chapters with)
  caps training to ``QUICK_EPOCHS`` epochs of ``QUICK_TRAIN_IMAGES`` images, and says so.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import sys
import time
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from . import distributed
from .data import ImageData
from .distributed import World
from .settings import progress_bars, quick_mode
from .tasks import SegmentationScores, Task, dense_targets, dice_loss, get_task, main_output

__all__ = ["fit", "evaluate", "predict", "segmentation_scores", "precision_for", "Precision", "History",
           "check_setup", "default_device", "describe_device", "quick_mode", "dense_targets", "dice_loss",
           "SegmentationScores"]

QUICK_EPOCHS = 2
QUICK_TRAIN_IMAGES = 2048
QUICK_TEST_IMAGES = 1000
ONE_PROCESS = World()  # no torchrun: this process is the whole run



def default_device() -> torch.device:
    """cuda if there is a GPU, else mps (Apple silicon), else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """'cuda (Tesla T4)', 'cpu (2 threads)', ... for the printed summaries."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        n = torch.get_num_threads()
        return f"cpu ({n} thread{'s' if n != 1 else ''})"
    return device.type


@dataclass(frozen=True)
class Precision:
    """How the forward pass computes: ``name`` "fp32", "bf16" or "fp16"; ``dtype`` is autocast's."""

    name: str
    dtype: torch.dtype | None = None

    @property
    def scaled(self) -> bool:
        """fp16's range ends at 65,504, so small gradients underflow: the loss is scaled up and the
        gradients down again (``torch.amp.GradScaler``). bf16 has fp32's range and needs no scaler."""
        return self.name == "fp16"

    def autocast(self, device: torch.device):
        return torch.autocast(device.type, dtype=self.dtype) if self.dtype else contextlib.nullcontext()


PRECISIONS = {"fp32": Precision("fp32"), "bf16": Precision("bf16", torch.bfloat16),
              "fp16": Precision("fp16", torch.float16)}


def precision_for(device: torch.device | str, capability: tuple[int, int] | None = None,
                  prefer: str | None = None) -> Precision:
    """The precision ``fit`` trains in on ``device``.

    - ``prefer`` ("fp32", "bf16" or "fp16") when given: what you ask for, on any device.
    - CUDA with compute capability 8.0 or higher (A100, L4, RTX 30xx, H100): bf16 autocast.
    - CUDA below 8.0 (Colab's T4 is 7.5, a V100 7.0): fp16 autocast with a GradScaler; these GPUs
      have fp16 tensor cores and no bf16 ones.
    - CPU and MPS: fp32.

    ``capability`` stands in for ``torch.cuda.get_device_capability(device)`` (for tests).
    """
    if prefer is not None:
        if prefer not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {prefer!r}")
        return PRECISIONS[prefer]
    device = torch.device(device)
    if device.type != "cuda":
        return PRECISIONS["fp32"]
    capability = capability or torch.cuda.get_device_capability(device)
    return PRECISIONS["bf16" if tuple(capability) >= (8, 0) else "fp16"]


@dataclass
class History:
    """What ``fit`` measured. ``curves`` holds one value per epoch under "train_<name>" and
    "test_<name>" (the loss, its parts, the task's metrics: "test_acc", "test_miou", ...), which
    read as attributes too (``history.test_acc``); ``step_curves`` the loss and metrics over each
    ``log_every`` training steps."""

    model: str = ""
    task: str = ""
    device: str = ""
    precision: str = ""
    quick: bool = False
    input_shape: tuple[int, ...] = ()  # (C, H, W) of what the model was fed
    epochs: list[int] = field(default_factory=list)
    curves: dict[str, list[float]] = field(default_factory=dict)
    steps: list[int] = field(default_factory=list)  # the step at the end of each window
    step_curves: dict[str, list[float]] = field(default_factory=dict)
    epoch_seconds: list[float] = field(default_factory=list)
    train_images: int = 0
    train_seconds: float = 0.0  # time in training steps only
    wall_seconds: float = 0.0  # the whole fit, evaluation included
    skipped_steps: int = 0  # fp16: steps the GradScaler skipped because a gradient overflowed
    processes: int = 1  # under torchrun: how many trained together (train_images counts all of theirs)

    def __getattr__(self, name: str):
        curves = self.__dict__.get("curves", {})
        if name in curves:
            return curves[name]
        raise AttributeError(f"History has no {name!r}; its curves are {', '.join(sorted(curves))}")

    def log(self, where: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.curves.setdefault(f"{where}_{k}", []).append(v)

    @property
    def step_loss(self) -> list[float]:
        return self.step_curves.get("loss", [])

    @property
    def step_error(self) -> list[float]:
        """Training error (1 - accuracy) over each window of steps, in [0, 1]."""
        return [1 - a for a in self.step_curves.get("acc", [])]

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0

    @property
    def final_test_acc(self) -> float:
        return self.curves.get("test_acc", [float("nan")])[-1]

    def to_dict(self) -> dict:
        return {**asdict(self), **self.curves, "step_loss": self.step_loss, "step_error": self.step_error,
                "images_per_s": self.images_per_s, "final_test_acc": self.final_test_acc}


def _channels_last(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu")


def _to_model_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Images (N, C, H, W) in channels_last on CUDA and CPU; anything else (token ids) as it is."""
    return x.contiguous(memory_format=torch.channels_last) if _channels_last(device) and x.dim() == 4 else x


def describe_data(data, n_train: int, n_test: int) -> str:
    """'60,000 train / 10,000 test images, 1x28x28' (or the data's own ``describe``: token sequences)."""
    if hasattr(data, "describe"):
        return data.describe(n_train, n_test)
    return f"{n_train:,} train / {n_test:,} test images, {'x'.join(map(str, data.input_shape))}"


def _count(data: ImageData, split: str, limit: int | None) -> int:
    n = len(data.split(split)[0])
    if n == 0 or limit == 0:
        raise ValueError(f"the {split} split of {data.name} is empty{' (limit=0)' if n else ''}: "
                         "there is nothing to train or score")
    return n if limit is None else min(n, limit)


def _add(sums: dict, values: dict, weight: float = 1) -> None:
    for k, v in values.items():
        v = v.detach() if isinstance(v, torch.Tensor) else v
        sums[k] = sums.get(k, 0) + v * weight


@torch.no_grad()
def _run(model, data, split, batch_size, limit, task, precision, world: World = ONE_PROCESS) -> tuple[dict, dict, int]:
    """(loss sums weighted by images, the task's score sums, images) of ``model`` over ``split``;
    under torchrun each process scores its slice of every batch and the sums are added up."""
    if limit is None and quick_mode():
        limit = QUICK_TEST_IMAGES
    _count(data, split, limit)
    device = data.device
    was_training = model.training
    model.eval()
    losses, sums, n = {}, {}, 0
    for x, y in distributed.shard_batches(data.batches(split, batch_size * world.size, limit=limit), world):
        with precision.autocast(device):
            out = model(_to_model_layout(x, device))
            loss, parts = task.evaluation_loss(model, out, y)
        _add(losses, {"loss": loss, **parts}, len(x))
        _add(sums, task.score(out, y))
        n += len(x)
    model.train(was_training)
    if world.distributed:
        losses, sums = distributed.all_reduce_sums(losses, world), distributed.all_reduce_sums(sums, world)
        n = distributed.all_reduce_sums({"n": n}, world)["n"]
    return losses, sums, n


def evaluate(model: nn.Module, data: ImageData, split: str = "test", batch_size: int | None = None,
             limit: int | None = None, *, task: Task | None = None, precision: str | None = None,
             world: World = ONE_PROCESS) -> dict[str, float]:
    """The task's loss, its parts and its metrics of ``model`` on ``split``, on the data's device:
    ``{"loss": 0.31, "acc": 0.89}`` for a classifier. In quick mode ``limit`` defaults to
    ``QUICK_TEST_IMAGES``; ``batch_size`` defaults to the task's ``eval_batch_size``. With a
    ``world`` of several processes (``fit`` under torchrun), every one of them must call it."""
    task = task or get_task(data.task)
    batch_size = batch_size or task.eval_batch_size
    losses, sums, n = _run(model, data, split, batch_size, limit, task, precision_for(data.device, prefer=precision),
                           world)
    return {**{k: v.item() / n for k, v in losses.items()}, **task.metrics(sums)}


def segmentation_scores(model: nn.Module, data: ImageData, split: str = "test", batch_size: int = 200,
                        limit: int | None = None) -> SegmentationScores:
    """Confusion matrix, IoU per class, mean IoU and pixel accuracy of a model that scores every
    pixel, on ``split`` (in quick mode at most ``QUICK_TEST_IMAGES`` images); ``loss`` is the
    mean cross-entropy per pixel."""
    losses, sums, n = _run(model, data, split, batch_size, limit, get_task("segmentation"),
                           precision_for(data.device))
    return SegmentationScores(list(data.classes), sums["confusion"].cpu(), losses["loss"].item() / n)


@torch.no_grad()
def predict(model: nn.Module, data: ImageData, split: str = "test", batch_size: int = 1000,
            limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes, true classes) on ``split``, as cpu tensors. In quick mode, ``limit``
    defaults to ``QUICK_TEST_IMAGES``."""
    if limit is None and quick_mode():
        limit = QUICK_TEST_IMAGES
    _count(data, split, limit)
    device, precision = data.device, precision_for(data.device)
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for x, y in data.batches(split, batch_size, limit=limit):
        with precision.autocast(device):
            logits = main_output(model(_to_model_layout(x, device)))
        preds.append(logits.argmax(1).cpu())
        targets.append(dense_targets(logits, y).cpu())
    model.train(was_training)
    return torch.cat(preds), torch.cat(targets)


def param_groups(model: nn.Module, lr: float, lr_scale: dict[str, float] | None = None) -> list[dict]:
    """The trainable parameters in groups with their learning rates: ``lr`` times the scale of the
    first prefix of ``lr_scale`` that names the parameter's module, ``lr`` for the rest."""
    scales = dict(lr_scale or {})
    for prefix, scale in scales.items():
        if not scale > 0:
            raise ValueError(f"lr_scale[{prefix!r}] must be positive, got {scale!r} (freeze layers instead)")
    groups: dict[str, list] = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            key = next((k for k in scales if name == k or name.startswith(k + ".")), "")
            groups.setdefault(key, []).append(p)
    unused = [k for k in scales if k not in groups]
    if unused:
        raise ValueError(f"lr_scale names {unused[0]!r}, which holds no trainable parameter of "
                         f"{type(model).__name__}; its top-level parts are "
                         f"{', '.join(n for n, _ in model.named_children())}")
    if not groups:
        raise ValueError("every parameter of the model is frozen: there is nothing to train")
    return [{"params": ps, "lr": lr * scales.get(k, 1.0)} for k, ps in groups.items()]


def _optimizer(name: str, params, lr: float, weight_decay: float, momentum: float) -> torch.optim.Optimizer:
    if name == "sgd":  # Nesterov momentum; momentum=0 is plain SGD (d2l's setting)
        return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=momentum > 0, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


@torch.no_grad()
def check_setup(model: nn.Module, data: ImageData, task: Task, *, epochs: int = 1, batch_size: int = 1,
                lr: float = 1e-3, precision: Precision = PRECISIONS["fp32"]) -> None:
    """Catch the mistakes that would otherwise fail deep inside a loss after a full epoch, before
    any work: the settings, an empty split, and the model's output against the data and the task
    (number of classes, one score per image or per pixel, mask sizes), from one forward pass of two
    training images in eval mode (no statistics move, no random numbers are drawn)."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if not lr > 0:
        raise ValueError(f"the learning rate must be positive, got lr={lr!r}")
    _count(data, "train", None)
    _count(data, "test", None)
    x, y = next(data.batches("train", 2))
    was_training = model.training
    with precision.autocast(data.device):
        out = model.eval()(_to_model_layout(x, data.device))
    model.train(was_training)
    task.check(out, y, data)


def _step(loss: torch.Tensor, opt, scaler: torch.amp.GradScaler, grad_clip: float | None, model: nn.Module) -> bool:
    """One optimiser step; True when the GradScaler skipped it because a gradient was inf or nan."""
    opt.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()  # without a scaler (fp32, bf16): loss.backward()
    if grad_clip is not None:
        scaler.unscale_(opt)  # clip the true gradients, not the scaled ones (2**16 times larger)
        nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    if not scaler.is_enabled():
        opt.step()
        return False
    scale = scaler.get_scale()
    scaler.step(opt)  # skipped if a gradient overflowed; update() then halves the scale
    scaler.update()
    return scaler.get_scale() < scale


def _schedule(sched, skipped: bool) -> None:
    if not skipped:
        sched.step()
        return
    with warnings.catch_warnings():  # OneCycleLR warns that the optimiser did not step: the scaler skipped it
        warnings.simplefilter("ignore", UserWarning)
        sched.step()


def _silent(*args, **kwargs) -> None:
    """What the processes other than rank 0 print: nothing."""


def _unused_parameters(model: nn.Module, data, task: Task, precision: Precision) -> list[str]:
    """The trainable parameters the task's loss leaves without a gradient, from one training-mode
    forward pass of two items; the model's state (batch norm statistics) is put back after it."""
    state = copy.deepcopy(model.state_dict())
    x, y = next(data.batches("train", 2))
    with precision.autocast(data.device):
        loss, _ = task.loss(model, model.train()(_to_model_layout(x, data.device)), y)
    names = distributed.unused_parameters(model, loss)
    model.load_state_dict(state)
    return names


def fit(model: nn.Module, data: ImageData, epochs: int = 10, *, batch_size: int = 128,
        optimizer: str = "adamw", lr: float = 2e-3, weight_decay: float = 5e-4, label_smoothing: float = 0.0,
        augment: bool = False, loss: str | None = None, task: Task | None = None, precision: str | None = None,
        grad_clip: float | None = None, device: torch.device | str | None = None, seed: int = 0,
        progress: bool | None = None, log_every: int = 20, momentum: float = 0.9,
        schedule: str = "one-cycle", lr_scale: dict[str, float] | None = None) -> History:
    """Train ``model`` on ``data``; return the ``History``.

    ``optimizer``: "adamw", or "sgd" with Nesterov ``momentum`` (``momentum=0``: plain SGD).
    ``schedule``: "one-cycle" (warm-up to ``lr``, then annealing to almost 0) or "constant".
    ``lr_scale``: other rates for some layers, by name prefix: ``{"features": 0.1}`` trains the
    parameters under ``model.features`` at a tenth of ``lr`` (fine-tuning a pretrained network).
    Frozen parameters (``requires_grad=False``) are left out of the optimiser.

    ``task``: what the loss and the metrics are; by default the one ``data.task`` names, built
    with ``loss`` (e.g. "cross_entropy+dice" for segmentation) and ``label_smoothing``.
    ``precision``: "fp32", "bf16" or "fp16" (with a GradScaler); by default ``precision_for(device)``.
    ``grad_clip``: clip the gradients' global norm to this value (after unscaling, under fp16).
    ``data`` is moved to ``device`` (default: ``default_device()``) if it is not there yet.
    A last training batch of a single image (which a batch norm on a 1x1 map cannot normalise) is
    merged into the batch before it. Prints one line per epoch and a summary.

    Under ``torchrun --nproc-per-node N`` (see ``cnn_book.distributed``) each process trains its
    slice of every batch on its own device (GPU ``LOCAL_RANK``, or the CPU) and the gradients are
    averaged: ``batch_size`` is per process, one step sees ``N * batch_size`` items, and only rank
    0 prints. One process, without torchrun, trains exactly as before.
    """
    if task is not None and (loss is not None or label_smoothing):
        raise ValueError("fit got a task and loss= or label_smoothing= too: give those to the task instead")
    task = task or get_task(data.task, loss=loss, label_smoothing=label_smoothing)
    world = distributed.world()
    if device is None and world.distributed:  # one GPU per process, by its rank on the machine
        gpus = torch.cuda.device_count()
        if gpus and world.local_rank >= gpus:
            raise ValueError(f"process {world.local_rank} of this machine has no GPU of its own: the machine has "
                             f"{gpus}; start at most {gpus} processes (torchrun --nproc-per-node {gpus}), or "
                             "train on the CPU (device='cpu')")
        device = torch.device("cuda", world.local_rank) if gpus else torch.device("cpu")
    device = torch.device(device) if device is not None else default_device()
    if world.distributed and device.type == "cuda" and device.index is None:  # "cuda": this process's own GPU
        device = torch.device("cuda", world.local_rank)
    distributed.init(world, device)
    say = print if world.main else _silent
    data = data if data.device == device else data.to(device)
    prec = precision_for(device, prefer=precision)
    quick = quick_mode()
    # quick mode: a few thousand images, or fewer of the data's larger items (a text sequence holds T tokens)
    quick_train = min(QUICK_TRAIN_IMAGES, getattr(data, "quick_limit", QUICK_TRAIN_IMAGES))
    quick_test = min(QUICK_TEST_IMAGES, getattr(data, "quick_limit", QUICK_TEST_IMAGES))
    train_limit, test_limit = (quick_train, quick_test) if quick else (None, None)
    epochs = min(epochs, QUICK_EPOCHS) if quick and isinstance(epochs, int) else epochs
    model.to(device, memory_format=torch.channels_last if _channels_last(device) else torch.preserve_format)
    check_setup(model, data, task, epochs=epochs, batch_size=batch_size, lr=lr, precision=prec)
    n_train, n_test = _count(data, "train", train_limit), _count(data, "test", test_limit)
    if world.distributed and min(n_train, n_test) < 2 * world.size:
        raise ValueError(f"{world.size} processes need at least {2 * world.size} training and test items "
                         f"(2 each), got {n_train:,} and {n_test:,}")
    steps_per_epoch = distributed.steps_per_epoch(n_train, batch_size, world)  # a lone last image merges
    log_every = max(1, min(log_every, steps_per_epoch))
    progress = (progress_bars() if progress is None else progress) and world.main
    find_unused = world.distributed and bool(_unused_parameters(model, data, task, prec))

    torch.manual_seed(seed + world.rank)  # dropout differs between processes, as their data do
    gen = torch.Generator().manual_seed(seed)  # the shuffle and augmentation: the same in every process
    opt = _optimizer(optimizer, param_groups(model, lr, lr_scale), lr, weight_decay, momentum)
    if schedule == "one-cycle":
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                    total_steps=epochs * steps_per_epoch)
    elif schedule == "constant":
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    else:
        raise ValueError(f"schedule must be 'one-cycle' or 'constant', got {schedule!r}")
    scaler = torch.amp.GradScaler(device.type, enabled=prec.scaled)
    name = getattr(model, "name", None) or type(model).__name__
    hist = History(model=name, task=task.name, device=describe_device(device), precision=prec.name,
                   quick=quick, input_shape=tuple(data.input_shape), processes=world.size)
    unit = data.unit
    net = distributed.wrap(model, world, device, find_unused)  # what the steps run: DDP(model) under torchrun
    if world.distributed:
        hist.device += f" x {world.size} processes"
        say(f"Data parallel: {world.size} processes ({'nccl' if device.type == 'cuda' else 'gloo'}), "
            f"batch {batch_size} each, {batch_size * world.size} per step"
            f"{'; parameters without a gradient in the loss are looked for at every step' if find_unused else ''}")
    if quick:
        say(f"QUICK MODE (CNN_BOOK_QUICK=1): {epochs} epoch(s) on {n_train:,} training {unit}, "
              f"tested on {n_test:,}. A smoke test, not the chapter's result.")
    say(f"Training {name} on {data.name} ({describe_data(data, n_train, n_test)}) "
          f"for {epochs} epochs on {hist.device} in {prec.name}: batch {batch_size}, "
          f"{optimizer if optimizer != 'sgd' or momentum else 'plain sgd'} lr {lr:g} {schedule}"
          f"{', augmented' if augment else ''}")

    start, step = time.perf_counter(), 0
    for epoch in range(1, epochs + 1):
        model.train()
        t0, seen, counted, losses, sums, window, in_window = time.perf_counter(), 0, 0, {}, {}, {}, 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress)
        batches = data.batches("train", batch_size * world.size, shuffle=True, augment=augment,
                               limit=train_limit, generator=gen, merge_single=True)
        for x, y in distributed.shard_batches(batches, world):  # this process's slice of each
            with prec.autocast(device):
                out = net(_to_model_layout(x, device))
                loss_t, parts = task.loss(model, out, y)
            skipped = _step(loss_t, opt, scaler, grad_clip, model)
            _schedule(sched, skipped)
            step, seen, hist.skipped_steps = step + 1, seen + len(x), hist.skipped_steps + skipped
            if skipped:  # fp16: a step the scaler skipped (its loss overflowed) stays out of the curves
                bar.update()
                continue
            scores, counted, in_window = task.score(out, y), counted + len(x), in_window + 1
            _add(losses, {"loss": loss_t, **parts}, len(x))
            _add(sums, scores)
            _add(window, {"loss": loss_t, **scores})
            if in_window == log_every:  # one host-device sync every log_every steps, not every step
                window = distributed.all_reduce_sums(window, world)
                hist.steps.append(step)
                mean = window.pop("loss").item() / (in_window * world.size)
                for k, v in {"loss": mean, **task.metrics(window)}.items():
                    hist.step_curves.setdefault(k, []).append(v)
                window, in_window = {}, 0
                bar.set_postfix(loss=f"{losses['loss'].item() / counted:.3f}", **task.metrics(sums))
            bar.update()
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        hist.train_seconds += time.perf_counter() - t0
        if world.distributed:  # the epoch's sums over all processes; rank 0's batch norm statistics for all
            losses, sums = distributed.all_reduce_sums(losses, world), distributed.all_reduce_sums(sums, world)
            counted, seen = distributed.all_reduce_sums({"counted": counted, "seen": seen}, world).values()
            distributed.broadcast_buffers(model, world)
        hist.train_images += seen
        train = {**{k: v.item() / counted for k, v in losses.items()}, **task.metrics(sums)}
        test = evaluate(model, data, "test", limit=test_limit, task=task, precision=prec.name, world=world)
        hist.epochs.append(epoch)
        hist.log("train", train)
        hist.log("test", test)
        hist.epoch_seconds.append(time.perf_counter() - t0)
        say(f"epoch {epoch:2d}/{epochs}  loss {train['loss']:.3f}  {task.epoch_line(train, test)}"
              f"  ({hist.epoch_seconds[-1]:.1f} s)")
    hist.wall_seconds = time.perf_counter() - start
    tokens = f" ({hist.images_per_s * data.input_shape[0]:,.0f} tokens/s)" if unit == "sequences" else ""
    say(f"Done: device {hist.device} | precision {prec.name} | wall time {hist.wall_seconds:.1f} s | "
          f"{hist.images_per_s:,.0f} train {unit}/s{tokens} | {task.summary_line(test)}"
          f"{' (quick mode)' if quick else ''}")
    return hist


def main(argv: list[str] | None = None) -> History:
    """``python -m cnn_book.train --recipe NAME``: train a recipe of ``cnn_book.recipes`` (the GPU
    one on CUDA) on its data; under ``torchrun --nproc-per-node N`` on N processes. With ``--out``,
    rank 0 alone writes the history (``history.json``) and the weights (``model.pt``)."""
    from . import recipes

    names = list(recipes.RECIPES)
    parser = argparse.ArgumentParser(
        prog="python -m cnn_book.train",
        description="Train a recipe of cnn_book.recipes (the GPU one on CUDA) on its data; under torchrun, "
                    "on N processes with DistributedDataParallel.",
        epilog="recipes: " + ", ".join(names) + ". Many processes: torchrun --nproc-per-node N -m cnn_book.train ...")
    parser.add_argument("--recipe", required=True, metavar="NAME", choices=names, help="the recipe's name")
    parser.add_argument("--epochs", type=int, help="instead of the recipe's")
    parser.add_argument("--batch-size", type=int, help="per process, instead of the recipe's")
    parser.add_argument("--lr", type=float, help="instead of the recipe's")
    parser.add_argument("--train-images", type=int, help="the first N training items only")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if there is one; under torchrun "
                                         "the GPU of the process's LOCAL_RANK)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="a folder for history.json and model.pt (written by rank 0 only)")
    args = parser.parse_args(argv)
    world = distributed.world()
    recipe = recipes.get(args.recipe, args.device)
    changes = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                                 ("train_images", args.train_images)) if v is not None}
    recipe = replace(recipe, **changes)
    if world.main:
        print(f"Recipe {args.recipe}: {recipe}")
    torch.manual_seed(args.seed)  # the same initial weights in every process (DDP copies rank 0's anyway)
    model = recipe.build()
    try:
        hist = fit(model, recipes.load_data(recipe), device=args.device, seed=args.seed, **recipe.fit_args)
        if args.out and world.main:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "history.json").write_text(json.dumps(hist.to_dict(), indent=1, default=str))
            torch.save(model.state_dict(), out / "model.pt")
            print(f"Wrote {out / 'history.json'} and {out / 'model.pt'}")
    finally:
        if world.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return hist


if __name__ == "__main__":
    main(sys.argv[1:])
