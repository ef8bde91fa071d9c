"""Brief, honest training: ``fit`` and ``evaluate`` for the book's chapters.

- The device is chosen automatically (cuda, then mps, then cpu); bf16 autocast on CUDA;
  channels_last memory layout on CUDA and on CPU (20-30 % faster training for the small CNNs of
  the first chapters on a 2-core CPU, measured; neutral for AlexNet). Data stay on the device
  (``cnn_book.data.ImageData``): no per-sample work.
- Every run prints the device, the wall time, the training images per second and the test accuracy.
- Quick mode: with ``CNN_BOOK_QUICK=1`` in the environment (what ``make test`` runs the chapters
  with), training is capped to ``QUICK_EPOCHS`` epochs of ``QUICK_TRAIN_IMAGES`` images and tested on
  ``QUICK_TEST_IMAGES``, and the output says so.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .data import ImageData

QUICK_EPOCHS = 2
QUICK_TRAIN_IMAGES = 2048
QUICK_TEST_IMAGES = 1000


def quick_mode() -> bool:
    """True when ``CNN_BOOK_QUICK`` is set to anything but '', '0', 'false' or 'no'."""
    return os.environ.get("CNN_BOOK_QUICK", "").strip().lower() not in ("", "0", "false", "no")


def default_device() -> torch.device:
    """cuda if there is a GPU, else mps (Apple silicon), else cpu."""
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(device: torch.device) -> str:
    """'cuda (NVIDIA H100 80GB HBM3)', 'cpu (2 threads)', ... for the printed summaries."""
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    return device.type


@dataclass
class History:
    """What ``fit`` measured: per-epoch curves, per-step training loss, and the run's totals."""

    model: str = ""
    device: str = ""
    quick: bool = False
    input_shape: tuple[int, ...] = ()  # (C, H, W) of what the model was fed
    epochs: list[int] = field(default_factory=list)
    train_loss: list[float] = field(default_factory=list)
    train_acc: list[float] = field(default_factory=list)
    test_loss: list[float] = field(default_factory=list)
    test_acc: list[float] = field(default_factory=list)  # pixel accuracy for a segmentation model
    test_miou: list[float] = field(default_factory=list)  # segmentation only: mean IoU per epoch
    epoch_seconds: list[float] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)  # step index of each entry of step_loss
    step_loss: list[float] = field(default_factory=list)
    step_error: list[float] = field(default_factory=list)  # training error over the same steps, in [0, 1]
    train_images: int = 0
    train_seconds: float = 0.0  # time in training steps only
    wall_seconds: float = 0.0  # the whole fit, evaluation included

    @property
    def images_per_s(self) -> float:
        return self.train_images / self.train_seconds if self.train_seconds else 0.0

    @property
    def final_test_acc(self) -> float:
        return self.test_acc[-1] if self.test_acc else float("nan")

    def to_dict(self) -> dict:
        return {**asdict(self), "images_per_s": self.images_per_s, "final_test_acc": self.final_test_acc}


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _channels_last(device: torch.device) -> bool:
    return device.type in ("cuda", "cpu")


def _to_model_layout(x: torch.Tensor, device: torch.device) -> torch.Tensor:
    return x.contiguous(memory_format=torch.channels_last) if _channels_last(device) else x


@torch.no_grad()
def evaluate(model: nn.Module, data: ImageData, split: str = "test", batch_size: int = 1000,
             limit: int | None = None) -> tuple[float, float]:
    """(mean cross-entropy, accuracy in [0, 1]) of ``model`` on ``split``, on the data's device.

    In quick mode, ``limit`` defaults to ``QUICK_TEST_IMAGES``."""
    if limit is None and quick_mode():
        limit = QUICK_TEST_IMAGES
    device = data.device
    was_training = model.training
    model.eval()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    n = 0
    for x, y in data.batches(split, batch_size, limit=limit):
        with _autocast(device):
            logits = model(_to_model_layout(x, device))
        y = dense_targets(logits, y)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        correct += (logits.argmax(1) == y).sum()
        n += y.numel()  # images, or pixels for a segmentation model
    model.train(was_training)
    return loss_sum.item() / n, correct.item() / n


@torch.no_grad()
def predict(model: nn.Module, data: ImageData, split: str = "test", batch_size: int = 1000,
            limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(predicted classes, true classes) on ``split``, as cpu tensors. In quick mode, ``limit``
    defaults to ``QUICK_TEST_IMAGES``."""
    if limit is None and quick_mode():
        limit = QUICK_TEST_IMAGES
    device = data.device
    was_training = model.training
    model.eval()
    preds, targets = [], []
    for x, y in data.batches(split, batch_size, limit=limit):
        with _autocast(device):
            logits = model(_to_model_layout(x, device))
        preds.append(logits.argmax(1).cpu())
        targets.append(dense_targets(logits, y).cpu())
    model.train(was_training)
    return torch.cat(preds), torch.cat(targets)


@dataclass
class SegmentationScores:
    """Per-pixel scores of a segmentation model. ``confusion[t, p]`` counts pixels of true class t
    predicted as p. IoU_c = TP / (TP + FP + FN); ``mean_iou`` averages it over the classes present
    (in the truth or the predictions); ``class_accuracy[c]`` is the share of class-c pixels found."""

    classes: list[str]
    confusion: torch.Tensor
    loss: float

    @property
    def iou(self) -> torch.Tensor:
        tp = self.confusion.diag().double()
        union = self.confusion.sum(0).double() + self.confusion.sum(1).double() - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    @property
    def mean_iou(self) -> float:
        return self.iou.nanmean().item()

    @property
    def class_accuracy(self) -> torch.Tensor:
        total = self.confusion.sum(1).double()
        return torch.where(total > 0, self.confusion.diag().double() / total.clamp(min=1),
                           torch.full_like(total, float("nan")))

    @property
    def pixel_accuracy(self) -> float:
        return (self.confusion.diag().sum() / self.confusion.sum()).item()


@torch.no_grad()
def segmentation_scores(model: nn.Module, data: ImageData, split: str = "test", batch_size: int = 200,
                        limit: int | None = None) -> SegmentationScores:
    """Confusion matrix, IoU per class, mean IoU and pixel accuracy of a model that scores every
    pixel, on ``split`` (in quick mode at most ``QUICK_TEST_IMAGES`` images)."""
    if limit is None and quick_mode():
        limit = QUICK_TEST_IMAGES
    device = data.device
    k = len(data.classes)
    was_training = model.training
    model.eval()
    confusion = torch.zeros(k * k, device=device, dtype=torch.long)
    loss_sum, n = torch.zeros((), device=device), 0
    for x, y in data.batches(split, batch_size, limit=limit):
        with _autocast(device):
            logits = model(_to_model_layout(x, device))
        y = dense_targets(logits, y)
        loss_sum += F.cross_entropy(logits.float(), y, reduction="sum")
        confusion += torch.bincount((y * k + logits.argmax(1)).flatten(), minlength=k * k)
        n += y.numel()
    model.train(was_training)
    return SegmentationScores(list(data.classes), confusion.view(k, k).cpu(), loss_sum.item() / n)


def _optimizer(name: str, params, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"optimizer must be 'sgd' or 'adamw', got {name!r}")


def dense_targets(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The targets that ``logits`` score: ``y`` itself, or for a segmentation model whose output is
    smaller than its input (U-Net without padding) the central part of the masks ``y`` it covers."""
    if logits.dim() == 4 and y.shape[-2:] != logits.shape[-2:]:
        h, w = logits.shape[-2:]
        top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
        y = y[..., top : top + h, left : left + w]
    return y


def dice_loss(logits: torch.Tensor, y: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """1 - the soft Dice coefficient, averaged over classes: for each class c,
    Dice_c = (2 sum p_c g_c + eps) / (sum p_c + sum g_c + eps) over all pixels of the batch, with p_c
    the softmax probability and g_c the one-hot mask. Insensitive to how many pixels a class has,
    which cross-entropy is not (Milletari et al., 2016)."""
    p = logits.float().softmax(1)  # (N, C, H, W)
    g = F.one_hot(y, p.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    dice = (2 * (p * g).sum(dims) + eps) / (p.sum(dims) + g.sum(dims) + eps)
    return 1 - dice.mean()


LOSSES = ("cross_entropy", "dice", "cross_entropy+dice")


def _loss(model: nn.Module, out, y: torch.Tensor, label_smoothing: float,
          kind: str = "cross_entropy") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(logits, loss, targets). A model with auxiliary classifiers (GoogLeNet in training) returns
    (logits, aux, ...); each auxiliary loss is added with the model's ``aux_loss_weight`` (the paper's 0.3).
    For dense outputs the targets are the masks cropped to the output (``dense_targets``)."""
    logits, aux = (out[0], [a for a in out[1:] if a is not None]) if isinstance(out, tuple) else (out, [])
    y = dense_targets(logits, y)
    loss = torch.zeros((), device=logits.device)
    if kind in ("cross_entropy", "cross_entropy+dice"):
        loss = loss + F.cross_entropy(logits.float(), y, label_smoothing=label_smoothing)
    if kind in ("dice", "cross_entropy+dice"):
        loss = loss + dice_loss(logits, y)
    for a in aux:
        loss = loss + model.aux_loss_weight * F.cross_entropy(a.float(), y, label_smoothing=label_smoothing)
    return logits, loss, y


def fit(model: nn.Module, data: ImageData, epochs: int = 10, *, batch_size: int = 128,
        optimizer: str = "adamw", lr: float = 2e-3, weight_decay: float = 5e-4,
        label_smoothing: float = 0.0, augment: bool = False, device: torch.device | str | None = None,
        seed: int = 0, progress: bool | None = None, log_every: int = 20, loss: str = "cross_entropy") -> History:
    """Train ``model`` on ``data`` with a one-cycle learning-rate schedule; return the ``History``.

    Classification, or segmentation when the model scores every pixel (``data`` a
    ``SegmentationData``): then accuracy counts pixels, ``loss`` may be "dice" or
    "cross_entropy+dice", and each epoch also reports the test mean IoU.

    ``data`` is moved to ``device`` (default: ``default_device()``) if it is not there yet. Prints
    one line per epoch and a summary with the device, wall time, images/s and test accuracy.
    ``progress``: a tqdm progress bar (default on, off when ``CNN_BOOK_PROGRESS=0``).
    """
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    dense = getattr(data, "task", "") == "segmentation"
    device = torch.device(device) if device is not None else default_device()
    if data.device != device:
        data = data.to(device)
    quick = quick_mode()
    train_limit = QUICK_TRAIN_IMAGES if quick else None
    test_limit = QUICK_TEST_IMAGES if quick else None
    if quick:
        epochs = min(epochs, QUICK_EPOCHS)
    n_train = min(train_limit or len(data.train_x), len(data.train_x))
    n_test = min(test_limit or len(data.test_x), len(data.test_x))
    steps_per_epoch = math.ceil(n_train / batch_size)
    log_every = max(1, min(log_every, steps_per_epoch))
    if progress is None:
        progress = os.environ.get("CNN_BOOK_PROGRESS", "1") != "0"

    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device)
    if _channels_last(device):
        model.to(memory_format=torch.channels_last)
    opt = _optimizer(optimizer, model.parameters(), lr, weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=epochs * steps_per_epoch)

    name = getattr(model, "name", None) or type(model).__name__
    hist = History(model=name, device=describe_device(device), quick=quick, input_shape=tuple(data.input_shape))
    if quick:
        print(f"QUICK MODE (CNN_BOOK_QUICK=1): {epochs} epoch(s) on {n_train:,} training images, "
              f"tested on {n_test:,}. A smoke test, not the chapter's result.")
    c, h, w = data.input_shape
    print(f"Training {name} on {data.name} ({n_train:,} train / {n_test:,} test images, {c}x{h}x{w}) "
          f"for {epochs} epochs on {hist.device}: batch {batch_size}, {optimizer} lr {lr:g} one-cycle"
          f"{', augmented' if augment else ''}")

    start = time.perf_counter()
    step = 0
    for epoch in range(1, epochs + 1):
        model.train()
        t0 = time.perf_counter()
        loss_sum = torch.zeros((), device=device)
        correct = torch.zeros((), device=device, dtype=torch.long)
        window = torch.zeros((), device=device)
        window_correct = torch.zeros((), device=device, dtype=torch.long)
        window_seen = 0
        in_window = 0
        seen = counted = 0
        bar = tqdm(total=steps_per_epoch, desc=f"epoch {epoch}/{epochs}", leave=False, disable=not progress)
        for x, y in data.batches("train", batch_size, shuffle=True, augment=augment, limit=train_limit,
                                 generator=gen):
            with _autocast(device):
                logits, batch_loss_t, y = _loss(model, model(_to_model_layout(x, device)), y, label_smoothing, loss)
            opt.zero_grad(set_to_none=True)
            batch_loss_t.backward()
            opt.step()
            sched.step()
            step += 1
            seen += len(y)
            counted += y.numel()  # images, or pixels for a segmentation model
            batch_loss = batch_loss_t.detach()
            loss_sum += batch_loss * len(y)
            window += batch_loss
            in_window += 1
            right = (logits.argmax(1) == y).sum()
            correct += right
            window_correct += right
            window_seen += y.numel()
            if in_window == log_every:  # one host-device sync every log_every steps, not every step
                hist.steps.append(step)
                hist.step_loss.append(window.item() / in_window)
                hist.step_error.append(1 - window_correct.item() / window_seen)
                window.zero_()
                window_correct.zero_()
                in_window = window_seen = 0
                bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", acc=f"{correct.item() / counted:.1%}")
            bar.update()
        bar.close()
        if device.type == "cuda":
            torch.cuda.synchronize()
        train_time = time.perf_counter() - t0
        hist.train_seconds += train_time
        hist.train_images += seen
        if dense:
            scores = segmentation_scores(model, data, "test", limit=test_limit)
            test_loss, test_acc = scores.loss, scores.pixel_accuracy
            hist.test_miou.append(scores.mean_iou)
        else:
            test_loss, test_acc = evaluate(model, data, "test", limit=test_limit)
        hist.epochs.append(epoch)
        hist.train_loss.append(loss_sum.item() / seen)
        hist.train_acc.append(correct.item() / counted)
        hist.test_loss.append(test_loss)
        hist.test_acc.append(test_acc)
        hist.epoch_seconds.append(time.perf_counter() - t0)
        print(f"epoch {epoch:2d}/{epochs}  loss {hist.train_loss[-1]:.3f}  train acc {hist.train_acc[-1]:.1%}"
              f"  test acc {test_acc:.1%}{f'  test mIoU {hist.test_miou[-1]:.3f}' if dense else ''}"
              f"  ({hist.epoch_seconds[-1]:.1f} s)")
    hist.wall_seconds = time.perf_counter() - start
    print(f"Done: device {hist.device} | wall time {hist.wall_seconds:.1f} s | "
          f"{hist.images_per_s:,.0f} train images/s | "
          f"test {'pixel ' if dense else ''}accuracy {hist.final_test_acc:.2%}"
          f"{f' | test mIoU {hist.test_miou[-1]:.3f}' if dense else ''}"
          f"{' (quick mode)' if quick else ''}")
    return hist
