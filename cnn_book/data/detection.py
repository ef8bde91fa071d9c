"""Detection sets, boxes and their classes: canvases of Fashion-MNIST items (offline, deterministic)
and tree crowns in NEON aerial photos (the deepforest wheel's data), with YOLO v1's grid targets.

``encode`` turns one image's boxes into the S x S x (5B + C) target of YOLO v1 (Redmon et al., 2016),
the layout ``cnn_book.models.yolo`` describes and decodes.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from ..files import DataError
from .classification import load_fashion_mnist
from .images import ImageData


def _check_boxes(boxes: Tensor, labels: Tensor, size: int, num_classes: int) -> None:
    if boxes.dim() != 2 or boxes.shape[1] != 4 or labels.shape != boxes.shape[:1]:
        raise ValueError(f"boxes must be (K, 4) in (x1, y1, x2, y2) with labels (K,); got {tuple(boxes.shape)} "
                         f"and {tuple(labels.shape)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise ValueError(f"labels must be whole class numbers (int64), got {labels.dtype}: pass labels.long() "
                         "if they hold whole numbers")
    if not torch.isfinite(boxes).all():
        bad = (~torch.isfinite(boxes)).any(1).nonzero().flatten().tolist()
        raise ValueError(f"box {bad[0]} has a coordinate that is NaN or infinite: {boxes[bad[0]].tolist()}")
    if len(boxes) and ((boxes[:, 2:] <= boxes[:, :2]).any() or boxes.min() < 0 or boxes.max() > size):
        raise ValueError(f"every box needs x1 < x2 and y1 < y2 inside the {size}x{size} image")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise ValueError(f"labels must lie in 0 .. {num_classes - 1}")


def encode(boxes: Tensor, labels: Tensor, size: int, grid: int = 7, num_boxes: int = 2,
           num_classes: int = 10) -> tuple[Tensor, int]:
    """(the S x S x (5B + C) target of one image, how many boxes did not fit).

    ``boxes`` (K, 4) are pixel coordinates (x1, y1, x2, y2) in a ``size`` x ``size`` image and
    ``labels`` (K,) their classes. The cell that holds a box's centre is responsible for it: its B
    box slots all hold the box (which of the B predictors answers for it is decided in the loss,
    by IoU) with confidence 1, and its class slot the one-hot class. A cell holds one object: a
    second centre in a taken cell is dropped and counted, the one-object-per-cell limit of v1."""
    _check_boxes(boxes, labels, size, num_classes)
    s, b = grid, num_boxes
    target = torch.zeros(s, s, 5 * b + num_classes)
    dropped = 0
    cell = size / s
    for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist(), strict=True):
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        col, row = min(int(cx // cell), s - 1), min(int(cy // cell), s - 1)
        if target[row, col, 4] == 1:
            dropped += 1
            continue
        box = torch.tensor([cx / cell - col, cy / cell - row, (x2 - x1) / size, (y2 - y1) / size, 1.0])
        target[row, col, : 5 * b] = box.repeat(b)
        target[row, col, 5 * b + label] = 1.0
    return target, dropped



@dataclass
class DetectionData(ImageData):
    """Images with boxes: ``train_boxes``/``test_boxes`` hold one (K, 4) float tensor per image, in
    pixels (x1, y1, x2, y2), and ``train_labels``/``test_labels`` one (K,) int64 tensor; ``train_y``/
    ``test_y`` are the same boxes as YOLO's (N, S, S, 5B + C) grid targets (``encode``).
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
