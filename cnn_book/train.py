"""Brief, honest training: one ``fit`` loop for every kind of chapter.

- What differs between kinds of work (the loss and its parts, the metrics, the checks) lives in a
  task (``cnn_book.tasks``); the data names its task, so ``fit(model, data, epochs)`` serves them all.
- The device is chosen automatically (cuda, then mps, then cpu) and the precision follows it
  (``cnn_book.device.precision_for``): bf16 autocast on CUDA compute capability 8.0 or higher, fp16
  autocast with a GradScaler below that (Colab's T4), fp32 on CPU and MPS unless asked.
- Under torchrun, what differs between processes is asked of a ``distributed.Group``.
- channels_last memory layout on CUDA and CPU (20-30 % faster for the small CNNs of the first
  chapters on a 2-core CPU, measured). Data stay on the device (``cnn_book.data.ImageData``).
- Mistakes are caught before the first step (``check_setup``), in the reader's words.
- Every run prints the device, the precision, the wall time, the training images per second and
  the task's figures. Quick mode (``CNN_BOOK_QUICK=1``, what ``make test`` runs the chapters with)
  caps training to ``QUICK_EPOCHS`` epochs of ``QUICK_TRAIN_IMAGES`` images, and says so.

The command line, ``python -m cnn_book.train --recipe NAME``, is ``cnn_book.cli``.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, field

import torch
from torch import nn
from tqdm.auto import tqdm

from .data import ImageData
from .device import PRECISIONS, Precision, default_device, describe_device, precision_for
from .distributed import Group, World
from .optim import make_optimizer, param_groups  # train.param_groups: the name the chapters use
from .schedules import scheduler
from .scores import SegmentationScores
from .settings import progress_bars, quick_mode
from .tasks import Task, dense_targets, dice_loss, get_task, main_output

__all__ = ["fit", "evaluate", "predict", "segmentation_scores", "precision_for", "Precision", "History",
           "check_setup", "default_device", "describe_device", "quick_mode", "dense_targets", "dice_loss",
           "SegmentationScores", "param_groups"]

QUICK_EPOCHS = 2
QUICK_TRAIN_IMAGES = 1024
QUICK_TEST_IMAGES = 500
ONE_PROCESS = Group(World(), torch.device("cpu"))  # no torchrun: this process is the whole run (its device unused)


@dataclass
class History:
    """What ``fit`` measured. ``curves`` holds one value per epoch under "train_<name>" and
    "test_<name>" (the loss, its parts, the task's metrics: "test_acc", "test_miou", ...), which
    ``history["test_acc"]`` reads; ``step_curves`` the loss and metrics over each ``log_every``
    training steps."""

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
    stopped: str | None = None  # why training stopped early: the loss stopped being a number
    eval_steps: list[int] = field(default_factory=list)  # fit(eval_every=...): the steps held-out loss was taken
    eval_loss: list[float] = field(default_factory=list)  # ... and that loss (the first eval_limit test items)
    best_step: int | None = None  # fit(keep_best=True): the step whose weights the model kept

    def __getitem__(self, name: str) -> list[float]:
        if name not in self.curves:
            raise KeyError(f"History has no curve {name!r}; its curves are {', '.join(sorted(self.curves))}")
        return self.curves[name]

    def log(self, where: str, values: dict[str, float]) -> None:
        for k, v in values.items():
            self.curves.setdefault(f"{where}_{k}", []).append(v)

    def add_epoch(self, epoch: int, train: dict[str, float], test: dict[str, float], seconds: float) -> None:
        self.epochs.append(epoch)
        self.log("train", train)
        self.log("test", test)
        self.epoch_seconds.append(seconds)

    def add_window(self, step: int, values: dict[str, float]) -> None:
        """The loss and metrics of the ``log_every`` steps that end at ``step``."""
        self.steps.append(step)
        for k, v in values.items():
            self.step_curves.setdefault(k, []).append(v)

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


def _count(data: ImageData, split: str, limit: int | None) -> int:
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit is how many {split} items to use: a whole number of at least 1, or None for all; "
                         f"got {limit!r}")
    n = len(data.split(split)[0])
    if n == 0 or limit == 0:
        raise ValueError(f"the {split} split of {data.name} is empty{' (limit=0)' if n else ''}: "
                         "there is nothing to train or score")
    return n if limit is None else min(n, limit)


def _add(sums: dict, values: dict, weight: float = 1) -> None:
    """``sums[k] += values[k] * weight``, on the device (no sync); a tensor that several names share
    (a classifier's loss is its cross-entropy) is weighted once, and a weight of 1 costs nothing."""
    weighted: dict[int, torch.Tensor] = {}
    for k, v in values.items():
        if isinstance(v, torch.Tensor):
            if id(v) not in weighted:
                weighted[id(v)] = v.detach() if weight == 1 else v.detach() * weight
            v = weighted[id(v)]
        elif weight != 1:
            v = v * weight
        sums[k] = sums.get(k, 0) + v


@torch.no_grad()
def _run(model, data, split, batch_size, limit, task, precision, group: Group = ONE_PROCESS) -> tuple[dict, dict, int]:
    """(loss sums weighted by images, the task's score sums, images) of ``model`` over ``split``;
    under torchrun each process scores its slice of every batch and the sums are added up."""
    if limit is None and quick_mode():
        limit = QUICK_TEST_IMAGES
    _count(data, split, limit)
    device = data.device
    was_training = model.training
    model.eval()
    losses, sums, n = {}, {}, 0
    for x, y in group.shard(data.batches(split, group.global_batch(batch_size), limit=limit)):
        with precision.autocast(device):
            out = task.forward(model, _to_model_layout(x, device), y)
            loss, parts = task.evaluation_loss(model, out, y)
        _add(losses, {"loss": loss, **parts}, len(x))
        _add(sums, task.score(out, y))
        n += len(x)
    model.train(was_training)
    return group.sum(losses), group.sum(sums), group.sum({"n": n})["n"]


def evaluate(model: nn.Module, data: ImageData, split: str = "test", batch_size: int | None = None,
             limit: int | None = None, *, task: Task | None = None, precision: str | None = None,
             group: Group = ONE_PROCESS) -> dict[str, float]:
    """The task's loss, its parts and its metrics of ``model`` on ``split``, on the data's device:
    ``{"loss": 0.31, "acc": 0.89}`` for a classifier. In quick mode ``limit`` defaults to
    ``QUICK_TEST_IMAGES``; ``batch_size`` defaults to the task's ``eval_batch_size``. With a
    ``group`` of several processes (``fit`` under torchrun), every one of them must call it."""
    task = task or get_task(data.task)
    batch_size = batch_size or task.eval_batch_size
    losses, sums, n = _run(model, data, split, batch_size, limit, task, precision_for(data.device, prefer=precision),
                           group)
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


@torch.no_grad()
def check_setup(model: nn.Module, data: ImageData, task: Task, *, epochs: int = 1, batch_size: int = 1,
                lr: float = 1e-3, precision: Precision = PRECISIONS["fp32"], grad_clip: float | None = None) -> None:
    """Catch the mistakes that would otherwise fail deep inside a loss after a full epoch, before
    any work: the settings, an empty split, and the model's output against the data and the task
    (number of classes, one score per image or per pixel, mask sizes), from one forward pass of two
    training images in eval mode (no statistics move, no random numbers are drawn)."""
    for name, value in (("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"the learning rate must be a positive, finite number, got lr={lr!r}")
    if grad_clip is not None and not (grad_clip > 0 and math.isfinite(grad_clip)):
        raise ValueError(f"grad_clip is the largest norm the gradients may keep: a positive number, or None for "
                         f"no clipping; got {grad_clip!r} (0 would stop learning, a negative one reverse it)")
    _count(data, "train", None)
    _count(data, "test", None)
    x, y = next(data.batches("train", 2))
    was_training = model.training
    with precision.autocast(data.device):
        out = task.forward(model.eval(), _to_model_layout(x, data.device), y)
    model.train(was_training)
    if not isinstance(out, (torch.Tensor, tuple)) or (  # a dict, a list, an object of a library's
            isinstance(out, tuple) and not all(o is None or isinstance(o, torch.Tensor) for o in out)):
        what = f"a dict with keys {', '.join(map(repr, out))}" if isinstance(out, dict) else type(out).__name__
        raise ValueError(f"fit expects the model to return its scores as a tensor (or a tuple of tensors, the "
                         f"main output first: auxiliary heads); "
                         f"{getattr(model, 'name', type(model).__name__)} returns {what}. Wrap it in a module "
                         f"whose forward returns the tensor (say, model(x)['logits'])")
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


def _unused_parameters(model: nn.Module, data, task: Task, precision: Precision) -> list[str]:
    """The trainable parameters the task's loss leaves without a gradient, from one training-mode
    forward pass of two items; the model's state (batch norm statistics) is put back after it."""
    from .distributed import unused_parameters

    state = copy.deepcopy(model.state_dict())
    x, y = next(data.batches("train", 2))
    with precision.autocast(data.device):
        loss, _ = task.loss(model, task.forward(model.train(), _to_model_layout(x, data.device), y), y)
    names = unused_parameters(model, loss)
    model.load_state_dict(state)
    return names


def _limits(data, epochs: int) -> tuple[int, int | None, int | None]:
    """(epochs, training items, test items): as asked, or quick mode's few (fewer of a data set's
    larger items: a text sequence holds T examples, a detection canvas costs a mAP)."""
    if not quick_mode():
        return epochs, None, None
    cap = getattr(data, "quick_limit", QUICK_TRAIN_IMAGES)
    epochs = min(epochs, QUICK_EPOCHS) if isinstance(epochs, int) else epochs
    return epochs, min(QUICK_TRAIN_IMAGES, cap), min(QUICK_TEST_IMAGES, cap)


def _plan(data, group: Group, train_limit: int | None, test_limit: int | None, batch_size: int,
          log_every: int) -> tuple[int, int, int, int]:
    """(training items, test items, steps per epoch, steps per logged window) of a run."""
    n_train, n_test = _count(data, "train", train_limit), _count(data, "test", test_limit)
    group.check_sizes(n_train, n_test)
    steps_per_epoch = group.steps_per_epoch(n_train, batch_size)  # a lone last image merges
    return n_train, n_test, steps_per_epoch, max(1, min(log_every, steps_per_epoch))


def _synchronize(device: torch.device) -> None:
    """Wait for the GPU's queued work: the clock then reads the time it took, not the time to queue it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _diverged(total: float, pending: list[tuple[int, torch.Tensor]], lr: float, precision: str) -> str | None:
    """None while ``total`` (the loss summed over the steps since the last check, over all processes)
    is a number; else what ``fit`` says as it stops: at which step the loss stopped being one (from
    ``pending``, this process's (step, loss) since then) and what to try."""
    if math.isfinite(total):
        return None
    bad = [st for (st, _), v in zip(pending, torch.stack([v for _, v in pending]).tolist() if pending else [],
                                    strict=True) if not math.isfinite(v)]
    where = f"at step {bad[0]}" if bad else "in another process"
    return (f"Stopped {where}: the loss became {'NaN' if math.isnan(total) else 'infinite'}, and more steps "
            f"would spread it.\nTry a lower learning rate (lr={lr:g} now) or clipping (grad_clip=1.0)"
            f"{'' if precision == 'fp32' else ', or precision=' + repr('fp32')}.")


def _opening(data, n_train: int, n_test: int, epochs: int, hist: History, batch_size: int,
             optimizer: str, momentum: float, lr: float, schedule: str, augment: bool, group: Group,
             find_unused: bool) -> list[str]:
    """The lines ``fit`` prints before the first step: data parallelism, quick mode, what trains."""
    lines = []
    if group.size > 1:
        unused = "; parameters without a gradient in the loss are looked for at every step" if find_unused else ""
        lines.append(f"Data parallel: {group.size} processes ({'nccl' if group.device.type == 'cuda' else 'gloo'}), "
                     f"batch {batch_size} each, {group.global_batch(batch_size)} per step{unused}")
    if hist.quick:
        lines.append(f"QUICK MODE (CNN_BOOK_QUICK=1): {epochs} epoch(s) on {n_train:,} training {data.unit}, "
                     f"tested on {n_test:,}. A smoke test, not the chapter's result.")
    opt = optimizer if optimizer != "sgd" or momentum else "plain sgd"
    lines.append(f"Training {hist.model} on {data.name} ({data.describe(n_train, n_test)}) for {epochs} epochs on "
                 f"{hist.device} in {hist.precision}: batch {batch_size}, {opt} lr {lr:g} {schedule}"
                 f"{', augmented' if augment else ''}")
    return lines


def _held_out(model: nn.Module, data, task: Task, prec: Precision, group: Group, limit: int, step: int,
              hist: History, best: tuple | None, keep: bool) -> tuple | None:
    """nanoGPT's estimate_loss: the loss on the first ``limit`` held-out items at ``step``, kept in
    the history and printed; returns the best (loss, step, weights) so far when ``keep``."""
    loss = evaluate(model, data, "test", limit=limit, task=task, precision=prec.name, group=group)["loss"]
    model.train()
    hist.eval_steps.append(step)
    hist.eval_loss.append(loss)
    recent = hist.step_curves.get("loss", [float("nan")])[-1]
    group.say(f"step {step:5d}: training loss {recent:.3f} (last window), held-out loss {loss:.3f}")
    if keep and (best is None or loss < best[0]):
        best = (loss, step, copy.deepcopy(model.state_dict()))
    return best


def _check_evaluations(eval_every: int | None, eval_limit: int, keep_best: bool) -> None:
    if eval_every is not None and not (isinstance(eval_every, int) and eval_every >= 1 and eval_limit >= 1):
        raise ValueError(f"eval_every and eval_limit must be whole numbers of at least 1, got {eval_every!r} "
                         f"and {eval_limit!r}")
    if keep_best and not eval_every:
        raise ValueError("keep_best=True keeps the best of the held-out evaluations: give eval_every too")


def _keep_best(model: nn.Module, best: tuple | None, hist: History, group: Group) -> None:
    """The best evaluation's weights into the model; the summary's figures stay the last step's."""
    if best is not None:
        model.load_state_dict(best[2])
        hist.best_step = best[1]
        group.say(f"kept the weights of step {best[1]} (held-out loss {best[0]:.3f}); the figures above are "
                  "the last step's")


def _summary(hist: History, data, task: Task, test: dict[str, float]) -> str:
    """The line ``fit`` prints last: where, how fast, and the task's figures."""
    return (f"Done: device {hist.device} | precision {hist.precision} | wall time {hist.wall_seconds:.1f} s | "
            f"{data.rate(hist.images_per_s)} | {task.summary_line(test)}{' (quick mode)' if hist.quick else ''}")


def fit(model: nn.Module, data: ImageData, epochs: int = 10, *, batch_size: int = 128,
        optimizer: str = "adamw", lr: float = 2e-3, weight_decay: float = 5e-4, label_smoothing: float = 0.0,
        augment: bool = False, loss: str | None = None, task: Task | None = None, precision: str | None = None,
        grad_clip: float | None = None, device: torch.device | str | None = None, seed: int = 0,
        progress: bool | None = None, log_every: int = 20, momentum: float = 0.9, schedule: str = "one-cycle",
        lr_scale: dict[str, float] | None = None, decay: str = "all", eval_every: int | None = None,
        eval_limit: int = 256, keep_best: bool = False, betas: tuple = (0.9, 0.999), eps: float = 1e-8) -> History:
    """Train ``model`` on ``data``; return the ``History``. Prints one line per epoch and a summary.
    ``optimizer``: "adamw" (``betas``, ``eps``) or "sgd" with Nesterov ``momentum`` (0: plain SGD);
    ``schedule``: "one-cycle", "warmup-linear" or "constant" (``schedules``); ``lr_scale`` (rates by
    name prefix, ``{"features": 0.1}``) and ``decay`` (where ``weight_decay`` applies: "all" or
    "matrices"): ``optim.param_groups``. ``task``: by default ``data.task``'s, with ``loss`` and
    ``label_smoothing``. ``precision``: "fp32", "bf16" or "fp16" (GradScaler), by default
    ``precision_for(device)``. ``grad_clip``: the gradients' largest norm. ``eval_every``: the loss on
    ``eval_limit`` held-out items every so many steps (nanoGPT's estimate_loss); ``keep_best``: end
    with the best of those weights. Under ``torchrun`` each process trains a slice of every batch."""
    if task is not None and (loss is not None or label_smoothing):
        raise ValueError("fit got a task and loss= or label_smoothing= too: give those to the task instead")
    task = task or get_task(data.task, loss=loss, label_smoothing=label_smoothing)
    group = Group.start(device)  # under torchrun: joins the others; its device is this process's
    device, prec = group.device, precision_for(group.device, prefer=precision)
    data = data if data.device == device else data.to(device)
    epochs, train_limit, test_limit = _limits(data, epochs)
    model.to(device, memory_format=torch.channels_last if _channels_last(device) else torch.preserve_format)
    check_setup(model, data, task, epochs=epochs, batch_size=batch_size, lr=lr, precision=prec, grad_clip=grad_clip)
    n_train, n_test, steps_per_epoch, log_every = _plan(data, group, train_limit, test_limit, batch_size, log_every)
    progress = (progress_bars() if progress is None else progress) and group.main

    torch.manual_seed(seed + group.rank)  # dropout differs between processes, as their data do
    gen = torch.Generator().manual_seed(seed)  # the shuffle and augmentation: the same in every process
    groups = param_groups(model, lr, lr_scale, weight_decay, decay)
    opt = make_optimizer(optimizer, groups, lr, weight_decay, momentum, betas, eps)
    sched = scheduler(schedule, opt, epochs * steps_per_epoch)
    scaler = torch.amp.GradScaler(device.type, enabled=prec.scaled)
    hist = History(model=getattr(model, "name", None) or type(model).__name__, task=task.name,
                   device=group.describe(), precision=prec.name, quick=quick_mode(),
                   input_shape=tuple(data.input_shape), processes=group.size)
    net, find_unused = group.wrap(model, lambda: _unused_parameters(model, data, task, prec))  # DDP(model)
    group.say(*_opening(data, n_train, n_test, epochs, hist, batch_size, optimizer, momentum, lr, schedule,
                        augment, group, find_unused))

    _check_evaluations(eval_every, eval_limit, keep_best)
    start, step, stop, best = time.perf_counter(), 0, None, None
    for epoch in range(1, epochs + 1):
        model.train()
        t0, seen, counted, losses, sums, window, pending = time.perf_counter(), 0, 0, {}, {}, {}, []
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress)
        batches = data.batches("train", group.global_batch(batch_size), shuffle=True, augment=augment,
                               limit=train_limit, generator=gen, merge_single=True)
        for x, y in group.shard(batches):  # this process's slice of each
            with prec.autocast(device):
                out = task.forward(net, _to_model_layout(x, device), y)
                loss_t, parts = task.loss(model, out, y)
            skipped = _step(loss_t, opt, scaler, grad_clip, model)
            _schedule(sched, skipped)
            step, seen, hist.skipped_steps = step + 1, seen + len(x), hist.skipped_steps + skipped
            bar.update()
            if eval_every and step % eval_every == 0:
                best = _held_out(model, data, task, prec, group, eval_limit, step, hist, best, keep_best)
            if skipped:  # fp16: a step the scaler skipped (its loss overflowed) stays out of the curves
                continue
            scores, counted = task.score(out, y), counted + len(x)
            _add(losses, {"loss": loss_t, **parts}, len(x))
            _add(sums, scores)
            _add(window, {"loss": loss_t, **scores})
            pending.append((step, loss_t.detach()))  # the window's losses: which step diverged, if one did
            if len(pending) == log_every:  # one host-device sync every log_every steps, not every step
                window = group.sum(window)
                total = window.pop("loss").item()
                hist.add_window(step, {"loss": total / (log_every * group.size), **task.metrics(window)})
                stop, window, pending = _diverged(total, pending, lr, prec.name), {}, []
                bar.set_postfix(loss=f"{losses['loss'].item() / counted:.3f}", **task.metrics(sums))
                if stop:
                    break
        bar.close()
        _synchronize(device)
        hist.train_seconds += time.perf_counter() - t0
        losses, sums, n = group.end_epoch(model, losses, sums, {"counted": counted, "seen": seen})
        hist.train_images += n["seen"]
        train = {**{k: v.item() / n["counted"] for k, v in losses.items()}, **task.metrics(sums)}
        test = evaluate(model, data, "test", limit=test_limit, task=task, precision=prec.name, group=group)
        hist.add_epoch(epoch, train, test, time.perf_counter() - t0)
        group.say(f"epoch {epoch:2d}/{epochs}  loss {train['loss']:.3f}  {task.epoch_line(train, test)}"
                  f"  ({hist.epoch_seconds[-1]:.1f} s)")
        if stop := stop or _diverged(train["loss"], pending, lr, prec.name):  # the steps after the last window
            hist.stopped = stop
            group.say(stop)
            break
    hist.wall_seconds = time.perf_counter() - start
    group.say(_summary(hist, data, task, test))
    _keep_best(model, best, hist, group)
    return hist


if __name__ == "__main__":  # python -m cnn_book.train (and under torchrun): the command line
    from .cli import main

    main()
