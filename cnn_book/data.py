"""Data sets as tensors on the training device: Fashion-MNIST (offline-first) and CIFAR-10.

Why tensors and not a ``DataLoader`` of PIL images: Fashion-MNIST is 47 MB of uint8. Held on the
device, a batch is one index operation; the per-sample PIL -> ``ToTensor`` path of a plain
``DataLoader`` costs more than LeNet's forward and backward pass together (``benchmarks/``).

Fashion-MNIST is looked up in this order:

1. ``$CNN_BOOK_DATA`` (a folder holding the four files, gzipped or not, directly or in
   ``fashion-mnist/`` or ``FashionMNIST/raw/``),
2. the per-user cache (``$CNN_BOOK_CACHE``, else ``$XDG_CACHE_HOME/cnn_book``, else ``~/.cache/cnn_book``),
3. Debian's package ``dataset-fashion-mnist`` (``/usr/share/datasets/fashion-mnist``),
4. a download by torchvision when online.

Every file is checked against the SHA-256 of its *decompressed* content, so the same check holds
for Debian's re-compressed files, the upstream ``.gz`` and torchvision's extracted ``raw/`` files.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import os
import shutil
import tempfile
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# SHA-256 of each decompressed IDX file (the same bytes in every distribution of the data set).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


class DataError(RuntimeError):
    """A data file is missing, truncated or corrupt; the message says which and what to do."""


def cache_dir() -> Path:
    """The per-user cache: ``$CNN_BOOK_CACHE``, else ``$XDG_CACHE_HOME/cnn_book``, else ``~/.cache/cnn_book``."""
    if os.environ.get("CNN_BOOK_CACHE"):
        return Path(os.environ["CNN_BOOK_CACHE"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "cnn_book"


# ---------------------------------------------------------------------------------------------
# Finding, checking and caching the Fashion-MNIST files
# ---------------------------------------------------------------------------------------------


def _candidate_dirs(folder: Path) -> list[Path]:
    return [folder, folder / "fashion-mnist", folder / "FashionMNIST" / "raw"]


def _find(folder: Path, name: str) -> Path | None:
    for d in _candidate_dirs(folder):
        for p in (d / name, d / f"{name}.gz"):
            if p.is_file():
                return p
    return None


# errors of writing, not reading: a full disk, a read-only file system, no permission, a quota
_UNWRITABLE = {errno.ENOSPC, errno.EROFS, errno.EACCES, errno.EPERM, errno.EDQUOT}


def _unwritable(folder: Path, e: OSError) -> DataError:
    return DataError(f"The data cache {folder} cannot be written ({e.strerror}). Point CNN_BOOK_CACHE to a folder "
                     f"you can write to, e.g. export CNN_BOOK_CACHE=/tmp/cnn_book")


def _damaged(src: Path, e: BaseException) -> DataError:
    fix = ("reinstall it: sudo apt-get install --reinstall dataset-fashion-mnist" if DEBIAN_DIR in src.parents
           else "delete it and get it again (see cnn_book.data's docstring for the places it can come from)")
    return DataError(f"The Fashion-MNIST file {src} is truncated or corrupt ({type(e).__name__}: {e}); {fix}.")


def _copy_verified(src: Path, dst: Path, sha256: str) -> None:
    """Decompress (if gzipped) ``src`` to ``dst`` through a temporary file, checking its SHA-256.

    ``dst`` appears only once its content is verified: a failure leaves no half-written cache.
    """
    from .download import remove_stale

    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(dst.parent, f".{dst.name}.")  # what a killed run left
        fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.{os.getpid()}.", suffix=".part")
    except OSError as e:
        if e.errno not in _UNWRITABLE:
            raise
        raise _unwritable(dst.parent, e) from None
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it 0600: a shared (classroom) cache must be readable
    h = hashlib.sha256()
    try:
        opener = gzip.open if src.suffix == ".gz" else open
        try:
            with opener(src, "rb") as fin, os.fdopen(fd, "wb") as fout:
                while chunk := fin.read(1 << 20):
                    h.update(chunk)
                    fout.write(chunk)
        except OSError as e:
            if e.errno in _UNWRITABLE:  # writing the cache copy failed, not reading the source
                raise _unwritable(dst.parent, e) from None
            raise _damaged(src, e) from None
        except (EOFError, gzip.BadGzipFile, zlib.error) as e:
            raise _damaged(src, e) from None
        if h.hexdigest() != sha256:
            raise DataError(
                f"The Fashion-MNIST file {src} is corrupt: the SHA-256 of its content is "
                f"{h.hexdigest()[:16]}..., expected {sha256[:16]}.... Delete it and get it again."
            )
        os.replace(tmp, dst)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _is_valid(path: Path, sha256: str) -> bool:
    from .download import sha256 as file_sha256

    return file_sha256(path) == sha256


def _no_data_message(looked: list[str], reason: str) -> str:
    places = "\n".join(f"  - {p}" for p in looked)
    return (
        "Fashion-MNIST was not found, and it could not be downloaded "
        f"({reason}).\nLooked in:\n{places}\nAny one of these gets it:\n"
        "  1. Debian/Ubuntu: sudo apt-get install dataset-fashion-mnist\n"
        "  2. Put the four files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,\n"
        "     t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz) in a folder and set CNN_BOOK_DATA to it\n"
        f"  3. Go online once: torchvision downloads them into {cache_dir()}"
    )


def fashion_mnist_root(download: bool = True) -> Path:
    """Make sure the verified Fashion-MNIST files are in the cache; return torchvision's root for them.

    The returned folder holds ``FashionMNIST/raw/<the four IDX files>``, the layout that
    ``torchvision.datasets.FashionMNIST(root, download=False)`` reads.
    """
    root = cache_dir()
    raw = root / "FashionMNIST" / "raw"
    looked: list[str] = []
    sources: list[Path] = []
    if os.environ.get("CNN_BOOK_DATA"):
        sources.append(Path(os.environ["CNN_BOOK_DATA"]).expanduser())
    sources += [raw, DEBIAN_DIR]

    for name, sha in FASHION_MNIST_FILES.items():
        target = raw / name
        if target.is_file():  # a valid cache entry is used as it is, whatever else is set
            try:
                valid = _is_valid(target, sha)
            except FileNotFoundError:  # another process dropped it as damaged a moment ago
                valid = False
            if valid:
                continue
            target.unlink(missing_ok=True)  # a damaged entry is ours to drop (another process may too)
        for folder in sources:
            if folder == raw:
                continue
            src = _find(folder, name)
            if src is not None:
                _copy_verified(src, target, sha)  # raises DataError naming src if it is damaged
                break
        else:
            looked = [str(s) for s in sources]
            break
    else:
        return root

    if not download:
        raise DataError(_no_data_message(looked, "download=False"))
    return _download_fashion_mnist(root, looked)


def _download_fashion_mnist(root: Path, looked: list[str]) -> Path:
    from torchvision.datasets import FashionMNIST

    def fetch(staging: Path) -> None:
        FashionMNIST(staging, train=True, download=True)  # checks torchvision's md5 of each .gz
        got = staging / "FashionMNIST" / "raw"
        for name, sha in FASHION_MNIST_FILES.items():
            _copy_verified(got / name, root / "FashionMNIST" / "raw" / name, sha)

    try:
        _staged(root, "Fashion-MNIST", fetch)
    except (RuntimeError, OSError) as e:
        if isinstance(e, DataError) and not str(e).startswith("No answer"):
            raise
        first = str(e).strip().splitlines()
        raise DataError(_no_data_message(looked, first[-1] if first else type(e).__name__)) from None
    return root


def _staged(root: Path, what: str, fetch, move: str | None = None) -> None:
    """``fetch(staging)`` downloads into a fresh folder in ``root`` (with a timeout on every read;
    Ctrl-C and SIGTERM clean it up, and a killed run's folder goes at the next call); ``move``, if
    given, is the folder renamed into ``root`` once complete, so ``root`` never holds half of it."""
    from .download import interruptible, is_timeout, network_timeout, remove_stale

    root.mkdir(parents=True, exist_ok=True)
    remove_stale(root, ".download-")
    staging = Path(tempfile.mkdtemp(dir=root, prefix=f".download-{os.getpid()}-"))
    try:
        with network_timeout() as seconds, interruptible():
            try:
                fetch(staging)
            except (RuntimeError, OSError) as e:
                if is_timeout(e) or is_timeout(getattr(e, "__context__", None) or e):
                    raise DataError(f"No answer from the server within {seconds:g} s while downloading {what} "
                                    f"(CNN_BOOK_TIMEOUT sets the limit). Offline, see cnn_book.data's "
                                    f"docstring for where the files can come from.") from None
                raise
        if move is not None:
            target = root / move
            if target.exists():
                shutil.rmtree(target)  # an incomplete copy from before: replaced by the complete one
            os.replace(staging / move, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------------------------
# Tensors on the device
# ---------------------------------------------------------------------------------------------


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
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                limit: int | None = None, generator: torch.Generator | None = None, merge_single: bool = False):
        """Yield ``(images, labels)`` batches on the data's device, images already prepared.

        ``merge_single``: a last batch of one image joins the batch before it (``fit`` asks for
        this: a batch norm cannot normalise one value per channel, as on a 1x1 map)."""
        x, y = self.split(split)
        for idx in batch_indices(len(x), batch_size, shuffle, limit, generator, merge_single, x.device):
            yield self.prepare(x[idx], augment=augment, generator=generator), y[idx]

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


def load_fashion_mnist(device: torch.device | str | None = None, download: bool = True) -> ImageData:
    """Fashion-MNIST (Xiao et al., 2017) as uint8 tensors on ``device`` (default: cpu).

    60,000 training and 10,000 test images, 1x28x28, ten classes of clothing.
    """
    from torchvision.datasets import FashionMNIST

    root = fashion_mnist_root(download=download)
    train = FashionMNIST(root, train=True, download=False)
    test = FashionMNIST(root, train=False, download=False)
    data = ImageData(
        name="Fashion-MNIST", classes=list(FashionMNIST.classes),
        train_x=train.data.unsqueeze(1), train_y=train.targets.long(),
        test_x=test.data.unsqueeze(1), test_y=test.targets.long(),
    )
    return data.to(device) if device is not None else data


def load_cifar10(root: str | os.PathLike | None = None, device: torch.device | str | None = None,
                 download: bool = True) -> ImageData:
    """CIFAR-10 (Krizhevsky, 2009) through ``torchvision.datasets.CIFAR10``: 50,000/10,000 images, 3x32x32.

    Needs the internet the first time (torchvision downloads and checks the archive); the files are
    kept in ``root`` (default: the cache).
    """
    from torchvision.datasets import CIFAR10

    root = Path(root) if root is not None else cache_dir()
    try:
        try:
            train = CIFAR10(root, train=True, download=False)
        except RuntimeError:  # not there (or damaged): downloaded whole, then moved into root
            if not download:
                raise
            _staged(root, "CIFAR-10", lambda staging: CIFAR10(staging, train=True, download=True),
                    move=CIFAR10.base_folder)
            train = CIFAR10(root, train=True, download=False)
        test = CIFAR10(root, train=False, download=False)
    except (RuntimeError, OSError) as e:
        if isinstance(e, DataError):
            raise
        raise DataError(
            f"CIFAR-10 is not in {root / CIFAR10.base_folder} and could not be downloaded ({e}). "
            "It needs the internet once; after that it is read from that folder."
        ) from None

    def as_tensors(ds) -> tuple[Tensor, Tensor]:
        return torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(ds.targets)

    (trx, try_), (tex, tey) = as_tensors(train), as_tensors(test)
    data = ImageData("CIFAR-10", list(train.classes), trx, try_, tex, tey)
    return data.to(device) if device is not None else data


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
            images = self.prepare(x[idx], augment)
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


# --- detection ----------------------------------------------------------------------------------

@dataclass
class DetectionData(ImageData):
    """Images with boxes: ``train_boxes``/``test_boxes`` hold one (K, 4) float tensor per image, in
    pixels (x1, y1, x2, y2), and ``train_labels``/``test_labels`` one (K,) int64 tensor; ``train_y``/
    ``test_y`` are the same boxes as YOLO's (N, S, S, 5B + C) grid targets (``models.yolo.encode``).
    Batches are ``(images, grid targets)``. ``dropped`` counts, per split, the boxes a grid target
    could not hold (a second object centre in a cell)."""

    task = "detection"
    # quick mode (CNN_BOOK_QUICK=1) trains and tests on this many images: a detection step costs far more
    # than a classification one (a larger image, mAP on the held-out ones), and the chapter must test in a minute
    quick_limit: ClassVar[int] = 512
    train_boxes: list = field(default_factory=list)
    train_labels: list = field(default_factory=list)
    test_boxes: list = field(default_factory=list)
    test_labels: list = field(default_factory=list)
    grid: int = 7
    num_boxes: int = 2
    dropped: dict = field(default_factory=dict)

    def with_input(self, size: int | None = None, pad: int = 0) -> ImageData:
        raise ValueError("a detection set is fed at its own size (resizing would move its boxes); build it at "
                         "the canvas size you want instead")

    def prepare(self, x: Tensor, augment: bool = False, generator: torch.Generator | None = None) -> Tensor:
        if augment:
            raise ValueError("flips and shifts would move the boxes: train a detection set with augment=False")
        return super().prepare(x)

    def boxes(self, split: str = "test", index: int = 0) -> tuple[Tensor, Tensor]:
        """(boxes (K, 4), labels (K,)) of one image."""
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        b, lab = (self.train_boxes, self.train_labels) if split == "train" else (self.test_boxes, self.test_labels)
        return b[index], lab[index]

    def targets(self, split: str = "test", limit: int | None = None) -> list[dict]:
        """Every box of the first ``limit`` images of ``split``, ``{"boxes", "labels"}`` per image (the
        format torchmetrics takes), including the boxes a grid target could not hold."""
        n = len(self.split(split)[0]) if limit is None else limit
        return [dict(zip(("boxes", "labels"), self.boxes(split, i), strict=True)) for i in range(n)]


def _tight_box(item: Tensor, threshold: int) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the pixels brighter than ``threshold``, right/bottom exclusive."""
    on = item > threshold
    rows, cols = torch.nonzero(on.any(1)).flatten(), torch.nonzero(on.any(0)).flatten()
    if len(rows) == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def fashion_mnist_detection(data: ImageData | None = None, n_train: int = 10_000, n_test: int = 1_000,
                            canvas: int = 112, items: tuple[int, int] = (1, 4),
                            scale: tuple[float, float] = (0.75, 1.5), max_overlap: float = 0.2, grid: int = 7,
                            num_boxes: int = 2, two_in_one_cell: bool = False, threshold: int = 25,
                            seed: int = 0) -> DetectionData:
    """A detection set built from Fashion-MNIST, offline and deterministic.

    Each canvas (black, ``canvas`` x ``canvas``, a multiple of ``grid``) holds ``items[0]`` to
    ``items[1]`` items, each scaled by a random factor in ``scale`` (bilinear) and placed at random;
    its box is tight around its pixels brighter than ``threshold`` (not the 28x28 frame). A new item
    whose box would overlap an earlier one by an IoU above ``max_overlap`` is placed again (up to 20
    tries, then left out). Training canvases use training items only and test canvases test items
    only. Canvas i of a split depends only on ``seed``, the split and i, never on how many are
    built. ``two_in_one_cell``: the second item of every canvas is centred in the first one's grid
    cell (the overlap cap is then ignored), to show YOLO v1's one-object-per-cell limit."""
    from torchvision.ops import box_iou

    from .models.yolo import encode

    data = data if data is not None else load_fashion_mnist()
    if canvas % grid:
        raise ValueError(f"the canvas ({canvas}) must be a multiple of the grid ({grid}): every cell the same size")
    if canvas < 28 * scale[1]:
        raise ValueError(f"the canvas ({canvas}) must hold the largest item, 28 x {scale[1]} pixels")
    cell = canvas / grid

    def build(x: Tensor, labels: Tensor, n: int, split: int):
        x, labels = x.cpu(), labels.cpu()
        images = torch.zeros(n, 1, canvas, canvas, dtype=torch.uint8)
        all_boxes, all_labels, targets, dropped = [], [], [], 0
        for i in range(n):
            # the canvas's own random numbers (torch's CPU generator keeps 32 bits of a seed)
            key = hashlib.sha256(f"fashion-mnist-detection/{seed}/{split}/{i}".encode()).digest()
            g = torch.Generator().manual_seed(int.from_bytes(key[:4], "little"))
            count = int(torch.randint(items[0], items[1] + 1, (1,), generator=g))
            boxes: list[list[float]] = []
            names: list[int] = []
            for slot in range(count):
                for _ in range(20):
                    pick = int(torch.randint(0, len(x), (1,), generator=g))
                    f = scale[0] + (scale[1] - scale[0]) * float(torch.rand(1, generator=g))
                    side = max(8, round(28 * f))
                    item = F.interpolate(x[pick : pick + 1].float(), size=(side, side), mode="bilinear",
                                         align_corners=False)[0, 0].round().clamp(0, 255).to(torch.uint8)
                    tight = _tight_box(item, threshold)
                    if tight is None:
                        continue
                    l0, t0, r0, b0 = tight
                    if two_in_one_cell and slot == 1 and boxes:
                        row, col = (int(((boxes[0][1] + boxes[0][3]) / 2) // cell),
                                    int(((boxes[0][0] + boxes[0][2]) / 2) // cell))
                        u, v = torch.rand(2, generator=g).tolist()
                        cx, cy = (col + 0.25 + 0.5 * u) * cell, (row + 0.25 + 0.5 * v) * cell
                        left = min(max(round(cx - (l0 + r0) / 2), -l0), canvas - r0)
                        top = min(max(round(cy - (t0 + b0) / 2), -t0), canvas - b0)
                    else:
                        left = int(torch.randint(-l0, canvas - r0 + 1, (1,), generator=g))
                        top = int(torch.randint(-t0, canvas - b0 + 1, (1,), generator=g))
                    box = [left + l0, top + t0, left + r0, top + b0]
                    free = two_in_one_cell and slot == 1
                    if boxes and not free and box_iou(torch.tensor([box], dtype=torch.float32),
                                                      torch.tensor(boxes, dtype=torch.float32)).max() > max_overlap:
                        continue
                    on = item > threshold
                    ys, xs = torch.nonzero(on, as_tuple=True)
                    images[i, 0, ys + top, xs + left] = item[on]  # a later item covers an earlier one
                    boxes.append([float(v) for v in box])
                    names.append(int(labels[pick]))
                    break
            b = torch.tensor(boxes, dtype=torch.float32).view(-1, 4)
            lab = torch.tensor(names, dtype=torch.int64)
            t, d = encode(b, lab, canvas, grid, num_boxes, len(data.classes))
            all_boxes.append(b)
            all_labels.append(lab)
            targets.append(t)
            dropped += d
        return images, all_boxes, all_labels, torch.stack(targets) if targets else torch.zeros(0), dropped

    trx, trb, trl, trt, trd = build(data.train_x, data.train_y, n_train, 0)
    tex, teb, tel, tet, ted = build(data.test_x, data.test_y, n_test, 1)
    name = f"Fashion-MNIST detection ({canvas}x{canvas}{', two centres in a cell' if two_in_one_cell else ''})"
    return DetectionData(name, list(data.classes), trx, trt, tex, tet, train_boxes=trb, train_labels=trl,
                         test_boxes=teb, test_labels=tel, grid=grid, num_boxes=num_boxes,
                         dropped={"train": trd, "test": ted})


# The NEON tree crowns that the deepforest wheel ships (Weinstein et al., 2019; its data/ folder): aerial RGB
# images of Yellowstone (site YELL, 10 cm a pixel) with every crown boxed in Pascal VOC XML. The training tiles
# come from one image and the test tiles from another, 13 km away.
NEON_TREES = {"train": "2019_YELL_2_528000_4978000_image_crop2", "test": "2019_YELL_2_541000_4977000_image_crop"}


def deepforest_data_dir() -> Path:
    """The data folder of the installed ``deepforest`` package, found without importing it (its
    ``__init__`` needs pytorch-lightning, which the book does not install: the wheel goes in with
    ``--no-deps``, from requirements-offline.txt)."""
    import importlib.util

    spec = importlib.util.find_spec("deepforest")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the NEON tree images come with the deepforest wheel: pip install --no-deps "
                        "deepforest==1.5.0 (make's set-up does, from requirements-offline.txt)")
    return Path(list(spec.submodule_search_locations)[0]) / "data"


def read_voc(xml: str | os.PathLike) -> tuple[str, Tensor, list[str]]:
    """One Pascal VOC annotation: (its image's file name, boxes (K, 4) as (xmin, ymin, xmax, ymax) in
    pixels, the K class names). VOC's corners are pixel indices; the boxes are used as they are."""
    import xml.etree.ElementTree as ET

    try:
        root = ET.parse(xml).getroot()
    except (ET.ParseError, OSError) as e:
        raise DataError(f"{xml} is not a readable Pascal VOC annotation ({e})") from None
    boxes, names = [], []
    for obj in root.iter("object"):
        bb = obj.find("bndbox")
        if bb is None:
            raise DataError(f"{xml}: an <object> without a <bndbox>")
        boxes.append([float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax")])
        names.append(obj.findtext("name", "").strip())
    return root.findtext("filename", "").strip(), torch.tensor(boxes, dtype=torch.float32).view(-1, 4), names


def _tiles(image: Tensor, boxes: Tensor, tile: int, size: int, stride: int, min_visible: float):
    """Square tiles of ``image`` (C, H, W) every ``stride`` pixels, resized to ``size``, with the boxes
    that keep at least ``min_visible`` of their area inside a tile, clipped to it and rescaled."""
    _, h, w = image.shape
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    out, kept = [], []
    for top in range(0, h - tile + 1, stride):
        for left in range(0, w - tile + 1, stride):
            crop = image[:, top : top + tile, left : left + tile].unsqueeze(0).float()
            out.append(F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                                     align_corners=False).round().clamp(0, 255).to(torch.uint8)[0])
            b = boxes - torch.tensor([left, top, left, top], dtype=torch.float32)
            b = b.clamp(0, tile)
            visible = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
            keep = (visible >= min_visible * area) & (visible > 0)
            kept.append(b[keep] * (size / tile))
    return torch.stack(out), kept


def neon_trees(root: str | os.PathLike | None = None, tile: int = 112, size: int = 112, stride: int | None = None,
               min_visible: float = 0.5, grid: int = 7, num_boxes: int = 2, files: dict | None = None) -> DetectionData:
    """A real detection set, offline: tree crowns in NEON aerial images (one class, "tree").

    Each image of ``files`` (``NEON_TREES``: split -> the stem of a VOC XML and its image in ``root``,
    by default the deepforest wheel's data folder) is cut into ``tile`` x ``tile`` tiles (11.2 m at
    10 cm a pixel), every ``stride`` pixels (training: half a tile, so that every crown is seen whole
    in some tile; test: ``tile``, no overlap), resized to ``size`` x ``size``. A crown cut by a
    tile's edge is kept, clipped, when at least ``min_visible`` of its box lies inside."""
    from PIL import Image
    from torchvision.transforms.functional import pil_to_tensor

    from .models.yolo import encode

    folder = Path(root) if root is not None else deepforest_data_dir()
    if size % grid:
        raise ValueError(f"the tile's size ({size}) must be a multiple of the grid ({grid})")
    parts = {}
    for split, stem in (files or NEON_TREES).items():
        name, boxes, _ = read_voc(folder / f"{stem}.xml")
        path = folder / (name if name and (folder / name).exists() else f"{stem}.png")
        try:
            with Image.open(path) as im:
                image = pil_to_tensor(im.convert("RGB"))
        except OSError as e:
            raise DataError(f"the image of {stem}.xml cannot be read: {path} ({e})") from None
        step = stride or (tile // 2 if split == "train" else tile)
        x, bxs = _tiles(image, boxes, tile, size, step, min_visible)
        labels = [torch.zeros(len(b), dtype=torch.int64) for b in bxs]
        encoded = [encode(b, lab, size, grid, num_boxes, 1) for b, lab in zip(bxs, labels, strict=True)]
        parts[split] = (x, torch.stack([t for t, _ in encoded]), bxs, labels, sum(d for _, d in encoded))
    (trx, trt, trb, trl, trd), (tex, tet, teb, tel, ted) = parts["train"], parts["test"]
    return DetectionData(f"NEON tree crowns ({tile} px tiles at {size}x{size})", ["tree"], trx, trt, tex, tet,
                         train_boxes=trb, train_labels=trl, test_boxes=teb, test_labels=tel, grid=grid,
                         num_boxes=num_boxes, dropped={"train": trd, "test": ted})


# --- segmentation -------------------------------------------------------------------------------

@dataclass
class SegmentationData(ImageData):
    """Images with a class for every pixel: ``train_y``/``test_y`` are ``(N, H, W)`` masks (uint8,
    0 = background). ``classes`` names every mask value, background first. Batches are
    ``(images, masks)`` with masks as int64; augmentation flips and shifts image and mask together."""

    task = "segmentation"

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def with_input(self, size: int | None = None, pad: int = 0) -> ImageData:
        raise ValueError("a segmentation set is fed at its own size (a resized image would need a resized "
                         "mask); build it at the size you want instead")

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                limit: int | None = None, generator: torch.Generator | None = None, merge_single: bool = False):
        x, y = self.split(split)
        for idx in batch_indices(len(x), batch_size, shuffle, limit, generator, merge_single, x.device):
            images, masks = x[idx].float().div_(255), y[idx]
            if augment:  # the mask rides along as one more channel, so both get the same flip and shift
                both = random_flip_and_shift(torch.cat([images, masks.unsqueeze(1).float()], 1),
                                             shift=max(1, images.shape[-1] // 14), generator=generator)
                images, masks = both[:, :-1], both[:, -1].round()  # shifted-in border: black, background 0
            mean = torch.tensor(self.mean, device=images.device).view(1, -1, 1, 1)
            std = torch.tensor(self.std, device=images.device).view(1, -1, 1, 1)
            yield (images - mean) / std, masks.long()

    def masks(self, split: str = "test", index: int | list[int] = 0) -> Tensor:
        """The masks of ``index`` as int64, ``(H, W)`` for an int, ``(k, H, W)`` for a list."""
        _, y = self.split(split)
        return y[index].long()


def fashion_mnist_scenes(data: ImageData | None = None, n_train: int = 20_000, n_test: int = 2_000,
                         canvas: int = 64, items: tuple[int, int] = (2, 4), threshold: int = 25,
                         seed: int = 0) -> SegmentationData:
    """A segmentation set built from Fashion-MNIST, offline and deterministic.

    Each scene is a black ``canvas`` x ``canvas`` image holding ``items[0]`` to ``items[1]``
    Fashion-MNIST items (28x28) at random places; a later item covers an earlier one where they
    overlap. The mask gives every pixel of an item brighter than ``threshold`` (of 255) its class
    + 1, and 0 (background) elsewhere: 11 classes. Training scenes use only training images and
    test scenes only test images, so no test item is ever seen in training. The same ``seed``
    gives the same scenes on every machine.
    """
    data = data if data is not None else load_fashion_mnist()
    if canvas < 28:
        raise ValueError(f"the canvas must hold a 28x28 item: got canvas={canvas}")
    gen = torch.Generator().manual_seed(seed)

    def build(x: Tensor, labels: Tensor, n: int) -> tuple[Tensor, Tensor]:
        x, labels = x.cpu(), labels.cpu()
        images = torch.zeros(n, 1, canvas, canvas, dtype=torch.uint8)
        masks = torch.zeros(n, canvas, canvas, dtype=torch.uint8)
        count = torch.randint(items[0], items[1] + 1, (n,), generator=gen)
        for slot in range(items[1]):  # slot by slot, so later items land on top
            pick = torch.randint(0, len(x), (n,), generator=gen)
            top = torch.randint(0, canvas - 27, (n,), generator=gen)
            left = torch.randint(0, canvas - 27, (n,), generator=gen)
            for i in torch.nonzero(count > slot).flatten().tolist():
                item = x[pick[i], 0]
                t, l_ = int(top[i]), int(left[i])
                on = item > threshold
                images[i, 0, t : t + 28, l_ : l_ + 28][on] = item[on]
                masks[i, t : t + 28, l_ : l_ + 28][on] = int(labels[pick[i]]) + 1
        return images, masks

    trx, try_ = build(data.train_x, data.train_y, n_train)
    tex, tey = build(data.test_x, data.test_y, n_test)
    scenes = SegmentationData(f"Fashion-MNIST scenes ({canvas}x{canvas})", ["background", *data.classes],
                              trx, try_, tex, tey)
    return scenes.to(data.device) if data.device.type != "cpu" else scenes


PET_CLASSES = ["pet", "background", "border"]  # the trimap's values 1, 2 and 3, shifted to 0, 1, 2


def load_oxford_pets(root: str | os.PathLike | None = None, size: int = 128, device: torch.device | str | None = None,
                     download: bool = True, limit: int | None = None) -> SegmentationData:
    """Oxford-IIIT Pet (Parkhi et al., 2012) through ``torchvision.datasets.OxfordIIITPet``, with its
    trimaps as masks: 3,680 training ("trainval") and 3,669 test photos of cats and dogs, resized to
    ``size`` x ``size`` (bilinear for photos, nearest for masks). Mask values: 0 pet, 1 background,
    2 the uncertain border. Needs the internet once (about 800 MB); then read from ``root``."""
    from torchvision.datasets import OxfordIIITPet
    from torchvision.transforms.functional import pil_to_tensor

    root = Path(root) if root is not None else cache_dir()
    splits = []
    for split in ("trainval", "test"):
        try:
            try:
                ds = OxfordIIITPet(root, split=split, target_types="segmentation", download=False)
            except RuntimeError:  # not there: downloaded whole, then moved into root
                if not download:
                    raise
                _staged(root, "Oxford-IIIT Pet", lambda staging: OxfordIIITPet(staging, download=True),
                        move="oxford-iiit-pet")
                ds = OxfordIIITPet(root, split=split, target_types="segmentation", download=False)
        except (RuntimeError, OSError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"Oxford-IIIT Pet is not in {root / 'oxford-iiit-pet'} and could not be downloaded "
                            f"({e}). It needs the internet once; after that it is read from that folder.") from None
        n = len(ds) if limit is None else min(limit, len(ds))
        images = torch.empty(n, 3, size, size, dtype=torch.uint8)
        masks = torch.empty(n, size, size, dtype=torch.uint8)
        for i in range(n):
            try:
                photo, trimap = ds[i]
                photo.load()
                trimap.load()
            except OSError as e:  # a missing (FileNotFoundError) or truncated image names its file
                raise DataError(f"Oxford-IIIT Pet: {ds._images[i]} or its trimap {ds._segs[i]} cannot be read "
                                f"({type(e).__name__}: {e}). Delete {root / 'oxford-iiit-pet'} and download "
                                f"it again.") from None
            img = pil_to_tensor(photo.convert("RGB")).unsqueeze(0).float()
            images[i] = F.interpolate(img, size=(size, size), mode="bilinear", antialias=True,
                                      align_corners=False).round().clamp(0, 255).to(torch.uint8)[0]
            tri = pil_to_tensor(trimap).unsqueeze(0)
            if tri.numel() and (tri.min() < 1 or tri.max() > 3):  # 1 pet, 2 background, 3 border
                raise DataError(f"Oxford-IIIT Pet: the trimap {ds._segs[i]} holds values "
                                f"{sorted(tri.unique().tolist())[:6]}, not only 1, 2 and 3: it is not a trimap "
                                f"of this data set. Delete {root / 'oxford-iiit-pet'} and download it again.")
            masks[i] = (F.interpolate(tri.float(), size=(size, size), mode="nearest")[0, 0] - 1).to(torch.uint8)
        splits.append((images, masks))
    (trx, try_), (tex, tey) = splits
    data = SegmentationData(f"Oxford-IIIT Pet ({size}x{size})", list(PET_CLASSES), trx, try_, tex, tey)
    return data.to(device) if device is not None else data


def sample_photo():
    """A colour photo that needs no download: Grace Hopper, from matplotlib's sample data (PIL image)."""
    from matplotlib import cbook
    from PIL import Image

    return Image.open(cbook.get_sample_data("grace_hopper.jpg")).convert("RGB")


# The photos the pretrained networks classify: public domain or CC0, shipped inside installed packages
# (matplotlib's sample data and scikit-image's skimage.data), so nothing is downloaded.
PHOTOS = {  # name -> (what it shows, where it comes from and its licence)
    "grace_hopper": ("Grace Hopper", "matplotlib's sample data; U.S. Navy photograph, public domain"),
    "chelsea": ("Chelsea the cat", "skimage.data.chelsea; Stefan van der Walt, CC0"),
    "coffee": ("a cup of coffee", "skimage.data.coffee; Rachel Michetti, Pikolo Espresso Bar, CC0"),
    "astronaut": ("the astronaut Eileen Collins", "skimage.data.astronaut; NASA, public domain"),
    "rocket": ("DSCOVR's launch on a Falcon 9", "skimage.data.rocket; SpaceX, public domain"),
}


def sample_photos(names: Sequence[str] | None = None) -> dict:
    """Colour photos that need no download, by name (PIL images, RGB); ``PHOTOS`` says what each shows
    and where it comes from. ``names`` picks some of them, in that order."""
    from PIL import Image

    names = list(PHOTOS) if names is None else list(names)
    unknown = [n for n in names if n not in PHOTOS]
    if unknown:
        raise ValueError(f"no sample photo called {unknown[0]!r}; the photos are {', '.join(PHOTOS)}")
    photos = {}
    for name in names:
        if name == "grace_hopper":
            photos[name] = sample_photo()
            continue
        try:
            import skimage.data
        except ImportError:
            raise ImportError(f"the photo {name!r} comes with scikit-image: pip install scikit-image") from None
        photos[name] = Image.fromarray(getattr(skimage.data, name)()).convert("RGB")
    return photos


if __name__ == "__main__":  # `python -m cnn_book.data`: fetch and verify once (used by `make data`)
    d = load_fashion_mnist()
    print(f"Fashion-MNIST ready in {fashion_mnist_root()}: {len(d.train_x):,} train / {len(d.test_x):,} test images")
    from .models import place_offline_weights

    for path in place_offline_weights():
        print(f"Published weights ready, verified, in torch's cache: {path}")
    from .text import kjv_verses  # the King James Bible, for chapters 14 and 15

    try:
        print(f"The King James Bible ready: {len(kjv_verses()):,} verses")
    except DataError as e:
        print(f"The King James Bible is not ready (chapters 14 and 15 need it): {e}")
