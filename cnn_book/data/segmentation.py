"""Segmentation sets, a class for every pixel: scenes of Fashion-MNIST items (offline) and Oxford-IIIT Pet."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from ..files import DataError, cache_dir, staged
from .classification import load_fashion_mnist
from .images import ImageData, batch_indices, random_flip_and_shift


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
            images, masks = x.index_select(0, idx).float().div_(255), y.index_select(0, idx)
            if augment:  # the mask rides along as one more channel, so both get the same flip and shift
                both = random_flip_and_shift(torch.cat([images, masks.unsqueeze(1).float()], 1),
                                             shift=max(1, images.shape[-1] // 14), generator=generator)
                images, masks = both[:, :-1], both[:, -1].round()  # shifted-in border: black, background 0
            mean, std = self.normalisation(images.device)
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
                staged(root, "Oxford-IIIT Pet", lambda staging: OxfordIIITPet(staging, download=True),
                       move="oxford-iiit-pet")
                ds = OxfordIIITPet(root, split=split, target_types="segmentation", download=False)
        except (RuntimeError, OSError) as e:
            if isinstance(e, DataError):
                raise
            raise DataError(f"Oxford-IIIT Pet is not in {root / 'oxford-iiit-pet'} and could not be downloaded "
                            f"({e}). It needs the internet once; after that it is read from that folder.",
                            note="Oxford-IIIT Pet is not on this machine and could not be downloaded "
                                 "(offline?).") from None
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
