"""Image classification sets: Fashion-MNIST (offline first, every file verified) and CIFAR-10.

Fashion-MNIST is looked up in this order:

1. ``$CNN_BOOK_DATA`` (a folder holding the four files, gzipped or not, directly or in
   ``fashion-mnist/`` or ``FashionMNIST/raw/``),
2. the per-user cache (``files.cache_dir()``),
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
import zlib
from pathlib import Path

import torch
from torch import Tensor

from ..files import DataError, atomic_write, cache_dir, sha256, staged
from .images import ImageData

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

# SHA-256 of each decompressed IDX file (the same bytes in every distribution of the data set).
FASHION_MNIST_FILES = {
    "train-images-idx3-ubyte": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train-labels-idx1-ubyte": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "t10k-images-idx3-ubyte": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "t10k-labels-idx1-ubyte": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}


def _find(folder: Path, name: str) -> Path | None:
    for d in (folder, folder / "fashion-mnist", folder / "FashionMNIST" / "raw"):
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


class _Unwritable(Exception):
    """Writing the cache copy failed (not reading the source): carried out of ``atomic_write``."""


def _copy_verified(src: Path, dst: Path, sha: str) -> None:
    """Decompress (if gzipped) ``src`` to ``dst``, checking its SHA-256; ``dst`` appears only once
    its content is verified: a failure leaves no half-written cache."""
    h = hashlib.sha256()
    try:
        with atomic_write(dst) as fout:
            try:
                with (gzip.open if src.suffix == ".gz" else open)(src, "rb") as fin:
                    while chunk := fin.read(1 << 20):
                        h.update(chunk)
                        try:
                            fout.write(chunk)
                        except OSError as e:
                            raise _Unwritable(e) from None
            except OSError as e:
                raise _damaged(src, e) from None
            except (EOFError, gzip.BadGzipFile, zlib.error) as e:
                raise _damaged(src, e) from None
            if h.hexdigest() != sha:
                raise DataError(f"The Fashion-MNIST file {src} is corrupt: the SHA-256 of its content is "
                                f"{h.hexdigest()[:16]}..., expected {sha[:16]}.... Delete it and get it again.")
    except _Unwritable as e:
        err = e.args[0]
        raise (_unwritable(dst.parent, err) if err.errno in _UNWRITABLE else _damaged(src, err)) from None
    except OSError as e:  # creating the folder or the temporary file
        if e.errno not in _UNWRITABLE:
            raise
        raise _unwritable(dst.parent, e) from None


def _is_valid(path: Path, sha: str) -> bool:
    return sha256(path) == sha


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
    sources: list[Path] = []
    if os.environ.get("CNN_BOOK_DATA"):
        sources.append(Path(os.environ["CNN_BOOK_DATA"]).expanduser())
    sources.append(DEBIAN_DIR)
    for name, sha in FASHION_MNIST_FILES.items():
        target = raw / name
        if target.is_file():  # a valid cache entry is used as it is, whatever else is set
            try:
                if _is_valid(target, sha):
                    continue
            except FileNotFoundError:  # another process dropped it as damaged a moment ago
                pass
            target.unlink(missing_ok=True)  # a damaged entry is ours to drop (another process may too)
        src = next((s for s in (_find(folder, name) for folder in sources) if s is not None), None)
        if src is None:
            looked = [str(s) for s in (sources[:-1] + [raw, DEBIAN_DIR])]
            if not download:
                raise DataError(_no_data_message(looked, "download=False"))
            return _download_fashion_mnist(root, looked)
        _copy_verified(src, target, sha)  # raises DataError naming src if it is damaged
    return root


def _download_fashion_mnist(root: Path, looked: list[str]) -> Path:
    from torchvision.datasets import FashionMNIST

    def fetch(staging: Path) -> None:
        FashionMNIST(staging, train=True, download=True)  # checks torchvision's md5 of each .gz
        got = staging / "FashionMNIST" / "raw"
        for name, sha in FASHION_MNIST_FILES.items():
            _copy_verified(got / name, root / "FashionMNIST" / "raw" / name, sha)

    try:
        staged(root, "Fashion-MNIST", fetch)
    except (RuntimeError, OSError) as e:
        if isinstance(e, DataError) and not str(e).startswith("No answer"):
            raise
        first = str(e).strip().splitlines()
        raise DataError(_no_data_message(looked, first[-1] if first else type(e).__name__)) from None
    return root


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
            staged(root, "CIFAR-10", lambda staging: CIFAR10(staging, train=True, download=True),
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
