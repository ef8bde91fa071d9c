"""Labelled images held as uint8 tensors on the training device, and how batches are drawn from them.

Why tensors and not a ``DataLoader`` of PIL images: Fashion-MNIST is 47 MB of uint8. Held on the
device, a batch is one index operation; the per-sample PIL -> ``ToTensor`` path of a plain
``DataLoader`` costs more than LeNet's forward and backward pass together (``benchmarks/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ImageData:
    """A labelled image data set held as uint8 tensors, with the input view a model needs.

    ``train_x``/``test_x`` are ``(N, C, H, W)`` uint8; ``mean``/``std`` (per channel, in [0, 1])
    are measured on the training set. ``size`` (resize) and ``pad`` (zero border) describe what
    the model is fed; ``with_input`` returns a view with other values, sharing the tensors.
    ``task`` names what training does with it (``cnn_book.tasks``).
    """

    task: ClassVar[str] = "classification"
    unit: ClassVar[str] = "images"  # what one item is called in printed lines and plots
    name: str
    classes: list[str]
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    mean: tuple[float, ...] = field(default=())
    std: tuple[float, ...] = field(default=())
    size: int | None = None
    pad: int = 0

    def __post_init__(self) -> None:
        if not self.mean:
            self.mean, self.std = channel_stats(self.train_x)

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of what the model receives after padding and resizing."""
        c, h, w = self.train_x.shape[1:]
        if self.size is not None:
            return (c, self.size, self.size)
        return (c, h + 2 * self.pad, w + 2 * self.pad)

    def to(self, device: torch.device | str) -> ImageData:
        return replace(
            self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
            test_x=self.test_x.to(device), test_y=self.test_y.to(device),
        )

    def describe(self, n_train: int, n_test: int) -> str:
        """'60,000 train / 10,000 test images, 1x28x28': what ``fit`` says it trains on."""
        return f"{n_train:,} train / {n_test:,} test {self.unit}, {'x'.join(map(str, self.input_shape))}"

    def rate(self, per_second: float) -> str:
        """'15,841 train images/s': how fast ``fit`` trained."""
        return f"{per_second:,.0f} train {self.unit}/s"

    def with_input(self, size: int | None = None, pad: int = 0) -> ImageData:
        """The same images, fed at ``size``x``size`` (bilinear resize on the device) after a ``pad`` border."""
        return replace(self, size=size, pad=pad)

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)

    def prepare(self, x: Tensor, augment: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """uint8 (N, C, H, W) -> normalised float (N, C, H', W'): pad, resize, augment, normalise."""
        x = x.float().div_(255)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        if self.size is not None and x.shape[-1] != self.size:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        if augment:
            x = random_flip_and_shift(x, shift=max(1, x.shape[-1] // 14), generator=generator)
        mean, std = self.normalisation(x.device)
        return x.sub_(mean).div_(std)  # x is this batch's own copy: normalised in place

    def normalisation(self, device: torch.device) -> tuple[Tensor, Tensor]:
        """``mean`` and ``std`` as (1, C, 1, 1) tensors on ``device``, made once per device (not per batch:
        on a GPU each would be a copy from the host)."""
        cache = self.__dict__.setdefault("_normalisation", {})
        key = (device, tuple(self.mean), tuple(self.std))  # a changed mean or std is made anew
        if key not in cache:
            cache[key] = tuple(torch.tensor(v, device=device).view(1, -1, 1, 1) for v in (self.mean, self.std))
        return cache[key]

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                limit: int | None = None, generator: torch.Generator | None = None, merge_single: bool = False):
        """Yield ``(images, labels)`` batches on the data's device, images already prepared.

        ``merge_single``: a last batch of one image joins the batch before it (``fit`` asks for
        this: a batch norm cannot normalise one value per channel, as on a 1x1 map)."""
        x, y = self.split(split)
        for idx in batch_indices(len(x), batch_size, shuffle, limit, generator, merge_single, x.device):
            yield self.prepare(x.index_select(0, idx), augment=augment, generator=generator), y.index_select(0, idx)

    def images(self, split: str = "test", index: int | list[int] = 0) -> Tensor:
        """Prepared images ready for the model: ``(1, C, H, W)`` for an int, ``(k, C, H, W)`` for a list."""
        x, _ = self.split(split)
        idx = [index] if isinstance(index, int) else list(index)
        return self.prepare(x[idx])


def batch_indices(n: int, batch_size: int, shuffle: bool = False, limit: int | None = None,
                  generator: torch.Generator | None = None, merge_single: bool = False,
                  device: torch.device | str = "cpu"):
    """Index tensors of the batches over ``n`` items (the first ``limit`` of a shuffled order, or
    the first ``limit`` in order). With ``merge_single`` a last batch of one item (when batches
    are larger than one) is merged into the batch before it, which then has ``batch_size + 1``
    items."""
    m = n if limit is None else min(limit, n)
    order = (torch.randperm(n, generator=generator)[:m] if shuffle else torch.arange(m)).to(device)
    starts = list(range(0, m, batch_size))
    if merge_single and batch_size > 1 and len(starts) > 1 and m - starts[-1] == 1:
        starts.pop()
    for i, start in enumerate(starts):
        yield order[start : starts[i + 1] if i + 1 < len(starts) else m]


def channel_stats(x: Tensor, chunk: int = 10_000) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and standard deviation of uint8 images, in [0, 1], summed chunk by chunk."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    squares = torch.zeros_like(total)
    for i in range(0, len(x), chunk):
        xs = x[i : i + chunk].double().cpu() / 255
        total += xs.sum(dim=(0, 2, 3))
        squares += xs.pow(2).sum(dim=(0, 2, 3))
    n = x.numel() / x.shape[1]
    mean = total / n
    std = (squares / n - mean**2).sqrt()
    return tuple(mean.tolist()), tuple(std.tolist())


def random_flip_and_shift(x: Tensor, shift: int, generator: torch.Generator | None = None) -> Tensor:
    """Per-image random horizontal flip and translation by up to ``shift`` pixels, batched on the device."""
    n, c, h, w = x.shape
    dev = x.device
    flip = torch.rand(n, generator=generator).to(dev) < 0.5
    x = torch.where(flip.view(n, 1, 1, 1), x.flip(-1), x)
    xp = F.pad(x, (shift,) * 4)
    dy = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(dev)
    dx = torch.randint(0, 2 * shift + 1, (n,), generator=generator).to(dev)
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]  # (N, 1, H, 1)
    cols = (dx[:, None] + torch.arange(w, device=dev))[:, None, None, :]  # (N, 1, 1, W)
    batch = torch.arange(n, device=dev).view(n, 1, 1, 1)
    chan = torch.arange(c, device=dev).view(1, c, 1, 1)
    return xp[batch, chan, rows, cols]


# --- binary pixels, for a generative model ----------------------------------------------------

@dataclass
class BinaryImages(ImageData):
    """Images whose pixels are 0 or 1, for a model of p(x) with a Bernoulli per pixel (the VAE).

    A grey level g in [0, 1] is read as the probability that the pixel is on (stochastic
    binarisation, Salakhutdinov and Murray, 2008). The test images are binarised once, with a
    fixed seed, so that every evaluation scores the same 0/1 images; the training images keep their
    grey levels and are binarised afresh each time a batch is drawn (``dynamic``, as in Burda et
    al., 2015), which is free augmentation. Batches are ``(x, x)``: the image is its own target.
    The labels stay in ``train_y``/``test_y`` (for the pictures: a latent space coloured by class).
    """

    task = "generative"
    dynamic: bool = True

    def with_input(self, size: int | None = None, pad: int = 0) -> ImageData:
        raise ValueError("binary images are fed at their own size: a resized image would have grey pixels "
                         "again; binarise the resized images instead")

    def prepare(self, x: Tensor, augment: bool = False, generator: torch.Generator | None = None) -> Tensor:
        """uint8 (N, C, H, W) -> float in [0, 1], not normalised: the likelihood is of these values."""
        if augment:
            raise ValueError("binary images are not augmented by flips and shifts here: dynamic binarisation "
                             "already gives a new image at every epoch (pass augment=False)")
        return x.float().div_(255)

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                limit: int | None = None, generator: torch.Generator | None = None, merge_single: bool = False):
        x, _ = self.split(split)
        draw = generator or torch.Generator().manual_seed(0)  # without one: the same 0/1 images every time
        for idx in batch_indices(len(x), batch_size, shuffle, limit, generator, merge_single, x.device):
            images = self.prepare(x.index_select(0, idx), augment)
            if split == "train" and self.dynamic:  # drawn on the CPU from fit's generator: the same run on any device
                images = (torch.rand(images.shape, generator=draw).to(images.device) < images).float()
            yield images, images


def binarize(data: ImageData, seed: int = 0, dynamic: bool = True) -> BinaryImages:
    """``data`` with 0/1 pixels: each test pixel is on with probability its grey level (drawn once
    from ``seed``); the training pixels likewise, either afresh for every batch (``dynamic=True``)
    or once (``dynamic=False``, a fixed binary training set)."""
    if data.train_x.dtype != torch.uint8:
        raise ValueError(f"binarize takes the uint8 images of a data set; {data.name}'s are {data.train_x.dtype}")
    g = torch.Generator().manual_seed(seed)

    def once(x: Tensor) -> Tensor:
        p = x.float().cpu() / 255
        return ((torch.rand(p.shape, generator=g) < p).to(torch.uint8) * 255).to(x.device)

    test_x = once(data.test_x)
    train_x = data.train_x if dynamic else once(data.train_x)
    return BinaryImages(name=f"{data.name} (binarised)", classes=list(data.classes), train_x=train_x,
                        train_y=data.train_y, test_x=test_x, test_y=data.test_y, mean=data.mean, std=data.std,
                        dynamic=dynamic)

