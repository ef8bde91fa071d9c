"""Figures for the detection chapter (``plot`` re-exports them): boxes on images, the YOLO paper's
Figure 2 view of one output grid, precision-recall curves, the responsible cells and the paper's
Figure 4 error breakdown.

Labels never overprint: a box carries a short tag (1, 2, ... for the truth, a, b, ... for the
detections) and each image's key, under it, names what the tags are.
"""

from __future__ import annotations

import math
import string
import textwrap
from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from torch import Tensor

TRUTH, PRED = "limegreen", "darkorange"


def _grid(n: int, ncols: int) -> tuple[int, int]:
    """(rows, columns) of a grid of ``n`` panels at most ``ncols`` wide; ``plot`` uses it too
    (defined here because ``plot`` imports this module, not the other way round)."""
    ncols = min(n, ncols)
    return math.ceil(n / ncols), ncols


def _image(ax, image: Tensor) -> None:
    """A uint8 image (C, H, W) at its own colours; pixel (i, j) covers [j - 0.5, j + 0.5]."""
    img = image.detach().cpu()
    img = img.expand(3, -1, -1) if img.shape[0] == 1 else img
    ax.imshow(img.permute(1, 2, 0).numpy())
    ax.set_xticks([])
    ax.set_yticks([])


def _tag(ax, x: float, y: float, text: str, color: str, va: str, taken: list) -> None:
    """A box's tag at (x, y), moved right past the tags already ``taken`` that it would cover."""
    step = 0.07 * ax.get_images()[0].get_array().shape[1]  # a tag's width, in pixels of the image
    while any(abs(x - a) < step and abs(y - b) < step and v == va for a, b, v in taken):
        x += step
    taken.append((x, y, va))
    ax.text(x, y, text, color="black", fontsize=7.5, fontweight="bold", va=va, ha="left",
            bbox={"boxstyle": "square,pad=0.1", "fc": color, "ec": "none"}, clip_on=True)


def _found(truth: dict, pred: dict) -> list[bool]:
    """For each true box: is it found (``models.yolo.found``: a detection of its class, IoU >= 0.5)?
    Every detection drawn counts, whatever its score."""
    from .models.yolo import found

    scored = {**pred, "scores": pred.get("scores", torch.ones(len(pred["boxes"])))}
    return found([scored], [truth], min_score=float("-inf"))[0].tolist()


def draw_boxes(ax, image: Tensor, truth: dict | None = None, pred: dict | None = None,
               classes: Sequence[str] = (), tags: bool = True, scores: bool = True, width: int = 38) -> int:
    """One image with its true boxes (green; tags 1, 2, ... at the top left, above the box) and its
    detections (orange, dashed; tags a, b, ... at the bottom right, under the box), and under the
    image a key: each true box's class, found (✓: a detection of its class with IoU ≥ 0.5) or not
    (✗), and each detection's class and score. Returns the number of lines of the key."""
    _image(ax, image)
    name = (lambda k: classes[int(k)]) if classes else (lambda k: str(int(k)))
    key, taken = [], []
    for d, color, marks in ((truth, TRUTH, "123456789"), (pred, PRED, string.ascii_lowercase)):
        if d is None or len(d["boxes"]) == 0:
            continue
        items = []
        found = _found(truth, pred) if d is truth and pred is not None else None
        for j, (x1, y1, x2, y2) in enumerate(d["boxes"].float().tolist()):
            mark = marks[j] if j < len(marks) else "+"
            dashed = d is pred
            ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec=color,
                                   lw=1.0 if (dashed or not tags) else 1.4, ls="--" if dashed else "-"))
            if not tags:
                continue
            if dashed:
                _tag(ax, x2 - 0.5, y2 - 0.5, mark, color, "top", taken)
            else:
                _tag(ax, x1 - 0.5, y1 - 0.5, mark, color, "bottom", taken)
            text = f"{mark} {name(d['labels'][j])}"
            if scores and "scores" in d:
                text += f" {float(d['scores'][j]):.2f}"
            if found is not None:
                text += " ✓" if found[j] else " ✗"
            items.append(text)
        if items:
            key.append(("truth: " if d is truth else "found: ") + ", ".join(items))
    lines = [w for k in key for w in textwrap.wrap(k, width, subsequent_indent="  ")]
    ax.set_xlabel("\n".join(lines), loc="left", fontsize=8, linespacing=1.2)
    return len(lines)


def detections(images: Tensor, truths: Sequence[dict] | None = None, preds: Sequence[dict] | None = None,
               classes: Sequence[str] = (), titles: Sequence[str] | None = None, ncols: int = 4,
               labels: bool = True, scores: bool = True) -> Figure:
    """Images (N, C, H, W) uint8 with the ground truth (``{"boxes", "labels"}`` per image, pixels,
    corner form) in green and the detections (with ``"scores"``) in orange, dashed: ``draw_boxes``.
    ``labels=False``: the boxes only, no tags and no key (many overlapping boxes); ``scores=False``:
    the key without the detections' scores."""
    n = len(images)
    rows, cols = _grid(n, ncols)
    lines = [0] * n
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.6 * rows), squeeze=False, layout="constrained")
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.axis("off")
            continue
        lines[i] = draw_boxes(ax, images[i], truths[i] if truths is not None else None,
                              preds[i] if preds is not None else None, classes, labels, scores)
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    fig.set_size_inches(2.6 * cols, (2.6 + 0.15 * max(lines, default=0)) * rows)  # room for the keys
    return fig


def grid_view(image: Tensor, grid: Tensor, classes: Sequence[str], num_boxes: int = 2,
              threshold: float = 0.1, truth: dict | None = None) -> Figure:
    """The YOLO paper's Figure 2 for one image and its S x S x (5B + C) output: every cell's B boxes,
    drawn thicker the higher their confidence (left); the class-probability map, each cell coloured
    by its most probable class, paler the less sure (middle); the final detections, scores above
    ``threshold`` after non-maximum suppression (right)."""
    from .models.yolo import corners
    from .models.yolo import detections as final

    g = grid.detach().float().cpu()
    s, size = g.shape[0], image.shape[-1]
    cell = size / s
    fig, axes = plt.subplots(1, 3, figsize=(9.6, 3.9))
    for ax in axes[:2]:
        _image(ax, image)
        for k in range(1, s):
            ax.axhline(k * cell - 0.5, color="w", lw=0.5, alpha=0.5)
            ax.axvline(k * cell - 0.5, color="w", lw=0.5, alpha=0.5)
    for b in range(num_boxes):
        x1, y1, x2, y2 = (c.flatten() for c in corners(g[..., 5 * b:5 * b + 4], s, size, clamp=True))
        conf = g[..., 5 * b + 4].flatten().clamp(0, 1)
        for j in range(len(conf)):
            if conf[j] > 0.02:
                axes[0].add_patch(Rectangle((x1[j] - 0.5, y1[j] - 0.5), x2[j] - x1[j], y2[j] - y1[j],
                                            fill=False, ec=PRED, lw=3 * float(conf[j]), alpha=float(conf[j])))
    axes[0].set(xlim=(-0.5, size - 0.5), ylim=(size - 0.5, -0.5))
    axes[0].set_title(f"{s}×{s}×{num_boxes} boxes, line width = confidence", fontsize=8)
    probs = g[..., 5 * num_boxes:].clamp(min=0)
    best, label = probs.max(-1)
    colors = plt.get_cmap("tab10")
    for r in range(s):
        for c in range(s):
            axes[1].add_patch(Rectangle((c * cell - 0.5, r * cell - 0.5), cell, cell, lw=0,
                                        color=colors(int(label[r, c]) % 10), alpha=0.7 * min(float(best[r, c]), 1)))
    shown = sorted(set(label[best > 0.3].tolist()))  # the classes some cell is fairly sure of
    if shown:
        axes[1].legend(handles=[Rectangle((0, 0), 1, 1, color=colors(k % 10)) for k in shown],
                       labels=[classes[k] for k in shown], fontsize=8, loc="upper center",
                       bbox_to_anchor=(0.5, -0.01), ncol=2, frameon=False)
    else:
        axes[1].set_xlabel("no cell gives any class a probability above 0.3", fontsize=8)
    axes[1].set_title("class probability map (most probable class)", fontsize=8)
    draw_boxes(axes[2], image, truth, final(g, size, num_boxes, threshold), classes)
    axes[2].set_title(f"detections: score > {threshold}, after NMS", fontsize=8)
    fig.tight_layout()
    return fig


def precision_recall(preds: Sequence[dict], targets: Sequence[dict], labels: Sequence[int],
                     classes: Sequence[str], iou: float = 0.5, ncols: int = 5) -> Figure:
    """The precision-recall curve of each class in ``labels`` at IoU ``iou`` (``models.yolo``'s), as
    measured (thin) and interpolated (VOC's monotone envelope, thick), with its average precision."""
    from .models.yolo import average_precision, interpolated
    from .models.yolo import precision_recall as curve

    rows, cols = _grid(len(labels), ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.4 * cols, 2.3 * rows), squeeze=False, sharey=True)
    for ax, label in zip(axes.flat, labels, strict=False):
        recall, precision = curve(list(preds), list(targets), label, iou)
        ap = average_precision(list(preds), list(targets), label, iou)
        ax.plot(recall, precision, lw=0.8, color="0.6", label="measured")
        ax.plot(recall, interpolated(precision), lw=1.8, color="C0", label="interpolated")
        ax.set_title(f"{classes[label]}: AP {ap:.3f}", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.set_xlabel("recall", fontsize=8)
    for ax in axes.flat[len(labels):]:
        ax.axis("off")
    axes[0, 0].set_ylabel("precision", fontsize=8)
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    return fig


def responsible_cells(image: Tensor, boxes: Tensor, grid: int, title: str = "") -> Figure:
    """One image (C, H, W) uint8 with YOLO's grid: each box (green), its centre (dot) and the cell that
    holds the centre, the one responsible for it (shaded)."""
    size = image.shape[-1]
    cell = size / grid
    fig, ax = plt.subplots(figsize=(3.8, 3.8))
    _image(ax, image)
    for k in range(1, grid):
        ax.axhline(k * cell - 0.5, color="w", lw=0.6, alpha=0.6)
        ax.axvline(k * cell - 0.5, color="w", lw=0.6, alpha=0.6)
    for x1, y1, x2, y2 in boxes.tolist():
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        ax.add_patch(Rectangle((x1 - 0.5, y1 - 0.5), x2 - x1, y2 - y1, fill=False, ec="lime", lw=1.5))
        ax.add_patch(Rectangle(((cx // cell) * cell - 0.5, (cy // cell) * cell - 0.5), cell, cell,
                               color="orange", alpha=0.4))
        ax.plot(cx - 0.5, cy - 0.5, "o", color="orange", ms=4)
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    return fig


def error_breakdown(breakdowns: Mapping[str, Mapping[str, int]]) -> Figure:
    """The YOLO paper's Figure 4 as bars: for each row (a class, or "all"), the shares of its top
    detections that are correct, localization, similar, other and background errors
    (``models.yolo.error_breakdown``), with the share printed where it is 5 % or more."""
    from .models.yolo import ERRORS

    names = list(breakdowns)
    fig, ax = plt.subplots(figsize=(7.5, 0.3 * len(names) + 1.1))
    left = torch.zeros(len(names))
    totals = torch.tensor([max(sum(breakdowns[n].values()), 1) for n in names], dtype=torch.float)
    for k, kind in enumerate(ERRORS):
        share = torch.tensor([breakdowns[n][kind] for n in names], dtype=torch.float) / totals
        ax.barh(range(len(names)), share, left=left, color=plt.get_cmap("tab10")(k), label=kind)
        for i, v in enumerate(share.tolist()):
            if v >= 0.05:
                ax.text(left[i] + v / 2, i, f"{v:.0%}", ha="center", va="center", fontsize=6.5)
        left += share
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("share of the top detections (N per class: its number of objects)", fontsize=8)
    ax.legend(fontsize=7, ncol=5, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return fig
