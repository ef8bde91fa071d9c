"""YOLO v1 (Redmon et al., 2016, arXiv 1506.02640): boxes on an S x S grid.

The network's output for one image is an S x S x (5B + C) tensor: for every cell, B predicted
boxes of five numbers each, (x, y, w, h, confidence), then C class probabilities shared by the
cell's boxes. x and y are the box centre's offset inside its cell, in [0, 1); w and h are the
box's width and height as fractions of the image (the paper's section 2). The layout of a cell:

    [x1, y1, w1, h1, c1,  x2, y2, w2, h2, c2,  p1 ... pC]      (B = 2: 10 + C numbers)

``encode`` (in ``cnn_book.data.detection``, where the targets are made) turns an image's boxes into
that layout and ``decode`` turns it back into boxes; the tests check that they are inverses.
``YOLOv1`` is the paper's network (``variant="paper"``) or a small form for a CPU
(``variant="small"``); ``yolo_loss`` is the paper's equation (3), term by term.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn
from torchvision.ops import box_convert

from ..data.detection import encode
from ._api import register_model
from .blocks import check_choice, check_input, param_dtype

__all__ = ["encode", "corners", "decode", "YOLOv1", "yolov1", "yolo_loss", "detections", "coco_map", "detect",
           "found", "truths", "precision_recall", "average_precision", "interpolated", "cell_iou",
           "ERRORS", "error_breakdown"]


def corners(t: Tensor, grid: int, size: float = 1.0, clamp: bool = False) -> tuple[Tensor, ...]:
    """(x1, y1, x2, y2), each (..., S, S), of boxes in the grid's layout (t: (..., S, S, 4) of x, y in
    the cell and w, h of the image), in units of ``size`` (1: fractions of the image). ``clamp``
    treats a negative predicted width or height as 0 (an IoU needs a real box)."""
    s = grid
    rows = torch.arange(s, device=t.device).view(s, 1)
    cols = torch.arange(s, device=t.device).view(1, s)
    cx, cy = (cols + t[..., 0]) / s * size, (rows + t[..., 1]) / s * size
    w, h = t[..., 2], t[..., 3]
    if clamp:
        w, h = w.clamp(min=0), h.clamp(min=0)
    boxes = box_convert(torch.stack([cx, cy, w * size, h * size], -1), "cxcywh", "xyxy")
    return boxes.unbind(-1)


def decode(grid: Tensor, size: int, num_boxes: int = 2, threshold: float = 0.0,
           first_only: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The boxes of one S x S x (5B + C) grid: (boxes (K, 4) in pixels, x1 y1 x2 y2; scores (K,);
    labels (K,)). Every predictor's box gets a class-specific score for every class, its confidence
    times the cell's probability of the class (the paper's test-time score), and is kept once for
    each class whose score exceeds ``threshold``. Regressed values below 0 count as 0 (two negative
    numbers would otherwise make a positive score). ``first_only`` reads one predictor per cell (a
    target, whose B slots are copies)."""
    s, b = grid.shape[0], num_boxes
    if grid.dim() != 3 or grid.shape[1] != s or grid.shape[2] <= 5 * b:
        raise ValueError(f"a grid is (S, S, 5B + C) with B = {b}; got {tuple(grid.shape)}")
    probs = grid[..., 5 * b :].clamp(min=0)  # (S, S, C)
    out_boxes, out_scores, out_labels = [], [], []
    for k in range(1 if first_only else b):
        boxes = torch.stack(corners(grid[..., 5 * k : 5 * k + 4], s, size), -1)  # (S, S, 4)
        scores = grid[..., 5 * k + 4, None].clamp(min=0) * probs  # (S, S, C): this box, every class
        keep = scores > threshold
        where = keep.nonzero()  # (K, 3): row, column, class, in the order scores[keep] reads them
        out_boxes.append(boxes[where[:, 0], where[:, 1]])
        out_scores.append(scores[keep])
        out_labels.append(where[:, 2])
    return torch.cat(out_boxes), torch.cat(out_scores), torch.cat(out_labels)


# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------

# The paper's Figure 3, as (kernel, filters, stride) for a convolution and "M" for a 2x2 max-pool
# with stride 2: 24 convolutions, then the two fully connected layers of the head.
PAPER_LAYERS = [
    (7, 64, 2), "M",
    (3, 192, 1), "M",
    (1, 128, 1), (3, 256, 1), (1, 256, 1), (3, 512, 1), "M",
    *[(1, 256, 1), (3, 512, 1)] * 4, (1, 512, 1), (3, 1024, 1), "M",
    *[(1, 512, 1), (3, 1024, 1)] * 2, (3, 1024, 1), (3, 1024, 2),
    (3, 1024, 1), (3, 1024, 1),
]
# Fast YOLO, "fewer convolutional layers (9 instead of 24) and fewer filters in those layers" (section 2):
# darknet's cfg/yolo-tiny.cfg of the paper's time (pjreddie/darknet, commit eaf033c), 3x3 convolutions and
# six pools, then a linear FC layer to 256 before the FC 4096 of the head.
FAST_LAYERS = [(3, 16, 1), "M", (3, 32, 1), "M", (3, 64, 1), "M", (3, 128, 1), "M", (3, 256, 1), "M",
               (3, 512, 1), "M", (3, 1024, 1), (3, 1024, 1), (3, 1024, 1)]
# A form that trains on a 2-core CPU: 112x112 canvases, 16x downsampling to the same 7x7 grid, the same
# head and output layout, a fraction of the widths.
SMALL_LAYERS = [(3, 16, 1), "M", (3, 32, 1), "M", (3, 64, 1), "M", (3, 128, 1), "M", (3, 256, 1)]
# variant: (layers, input size, the head's hidden width, a linear bottleneck before it or None)
LAYERS = {"paper": (PAPER_LAYERS, 448, 4096, None), "fast": (FAST_LAYERS, 448, 4096, 256),
          "small": (SMALL_LAYERS, 112, 512, None)}


class YOLOv1(nn.Module):
    """YOLO v1: ``features``, the convolutions with leaky ReLU (slope 0.1) and biases (the paper has no
    batch norm), down to a ``grid`` x ``grid`` map; ``classifier``, a fully connected layer, dropout
    0.5 and a linear layer to S * S * (5B + C) numbers, returned as (N, S, S, 5B + C)."""

    task = "detection"

    def __init__(self, num_classes: int = 20, in_channels: int = 3,
                 variant: Literal["paper", "fast", "small"] = "paper", grid: int = 7, num_boxes: int = 2,
                 dropout: float = 0.5) -> None:
        super().__init__()
        check_choice("variant", variant, tuple(LAYERS))
        layers, size, hidden, bottleneck = LAYERS[variant]
        self.name = f"YOLOv1-{variant}"
        self.input_shape = (in_channels, size, size)
        self.grid, self.num_boxes, self.num_classes = grid, num_boxes, num_classes
        blocks: list[nn.Module] = []
        c = in_channels
        for layer in layers:
            if layer == "M":
                blocks.append(nn.MaxPool2d(2, 2))
                continue
            k, out, stride = layer
            blocks += [nn.Conv2d(c, out, k, stride, padding=k // 2), nn.LeakyReLU(0.1, inplace=True)]
            c = out
        self.features = nn.Sequential(*blocks)
        per_cell = 5 * num_boxes + num_classes
        head: list[nn.Module] = [nn.Flatten()]  # (N, 1024, 7, 7) -> (N, 50,176)
        width = c * grid * grid
        if bottleneck:  # Fast YOLO: a linear layer to 256 first
            head.append(nn.Linear(width, bottleneck))
            width = bottleneck
        head += [
            nn.Linear(width, hidden), nn.LeakyReLU(0.1, inplace=True),  # the paper's: 205 M weights
            nn.Dropout(dropout),
            nn.Linear(hidden, grid * grid * per_cell),  # linear: coordinates and scores are regressed
        ]
        self.classifier = nn.Sequential(*head)

    def forward(self, x: Tensor) -> Tensor:
        check_input(x, type(self).__name__, self.input_shape[0], size=self.input_shape[1], dtype=param_dtype(self))
        s = self.grid
        return self.classifier(self.features(x)).view(len(x), s, s, -1)  # (N, S, S, 5B + C)


@register_model
def yolov1(num_classes: int = 20, in_channels: int = 3, **kwargs) -> YOLOv1:
    """YOLO v1: the paper's network (448x448, 24 convolutions, S = 7, B = 2, 20 classes: 7x7x30;
    271,703,550 parameters), ``variant="fast"`` (Fast YOLO, 9 convolutions), or ``variant="small"``,
    a form for 112x112 canvases that trains on a CPU."""
    return YOLOv1(num_classes=num_classes, in_channels=in_channels, **kwargs)


# ---------------------------------------------------------------------------------------------
# The loss (the paper's equation 3)
# ---------------------------------------------------------------------------------------------

def cell_iou(a: Tensor, b: Tensor, grid: int) -> Tensor:
    """IoU of boxes in the grid's layout (x, y in the cell, w, h of the image; (..., S, S, 4)), box
    by box: each pair sits in the same cell."""
    ax1, ay1, ax2, ay2 = corners(a, grid, clamp=True)
    bx1, by1, bx2, by2 = corners(b, grid, clamp=True)
    inter = (torch.minimum(ax2, bx2) - torch.maximum(ax1, bx1)).clamp(min=0) * \
        (torch.minimum(ay2, by2) - torch.maximum(ay1, by1)).clamp(min=0)
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union.clamp(min=1e-9)


def _signed_sqrt(t: Tensor) -> Tensor:
    """sqrt for the width and height terms; a predicted size can be negative early in training, and
    sign(t) sqrt(|t|) keeps its gradient pointing the right way (sqrt of a clamp would stop it)."""
    return torch.sign(t) * torch.sqrt(t.abs() + 1e-9)


def yolo_loss(pred: Tensor, target: Tensor, num_boxes: int = 2, lambda_coord: float = 5.0,
              lambda_noobj: float = 0.5) -> tuple[Tensor, dict[str, Tensor]]:
    """The paper's sum-squared loss of (N, S, S, 5B + C) predictions against ``encode``'s targets,
    summed over an image's cells and averaged over the images: (loss, its four parts).

    - ``coord``: lambda_coord x the squared errors of x, y, sqrt(w), sqrt(h) of the responsible
      predictor of each cell that holds an object: the one of its B boxes with the highest IoU with
      the object's box;
    - ``object``: (C - IoU)^2 of the responsible predictor: its confidence is trained to be the IoU
      of its box with the object's (a constant for this step), not 1;
    - ``no_object``: lambda_noobj x C^2 of every predictor that is not responsible, in the cells with
      an object too;
    - ``class``: the squared errors of the C class probabilities of the cells with an object."""
    n, s = pred.shape[0], pred.shape[1]
    b = num_boxes
    pred, target = pred.float(), target.float()
    boxes = pred[..., : 5 * b].reshape(n, s, s, b, 5)  # (N, S, S, B, 5)
    truth = target[..., :4]  # the object's box (every slot holds it)
    has_obj = target[..., 4]  # (N, S, S): 1 where a centre lies
    ious = torch.stack([cell_iou(boxes[..., k, :4], truth, s) for k in range(b)], -1)  # (N, S, S, B)
    best = ious.argmax(-1, keepdim=True)
    responsible = torch.zeros_like(ious).scatter_(-1, best, 1.0) * has_obj.unsqueeze(-1)  # (N, S, S, B)
    resp_box = (boxes * responsible.unsqueeze(-1)).sum(-2)  # (N, S, S, 5): the responsible predictor's
    xy = (resp_box[..., :2] - truth[..., :2]).pow(2).sum(-1)
    wh = (_signed_sqrt(resp_box[..., 2:4]) - torch.sqrt(truth[..., 2:4])).pow(2).sum(-1)
    coord = lambda_coord * (has_obj * (xy + wh)).sum((1, 2))
    iou_target = (ious * responsible).sum(-1).detach()
    obj = (has_obj * (resp_box[..., 4] - iou_target).pow(2)).sum((1, 2))
    noobj = lambda_noobj * ((1 - responsible) * boxes[..., 4].pow(2)).sum((1, 2, 3))
    cls = (has_obj.unsqueeze(-1) * (pred[..., 5 * b :] - target[..., 5 * b :]).pow(2)).sum((1, 2, 3))
    parts = {"coord": coord.mean(), "object": obj.mean(), "no_object": noobj.mean(), "class": cls.mean()}
    return sum(parts.values()), parts


# ---------------------------------------------------------------------------------------------
# From the grid to detections, and their scores
# ---------------------------------------------------------------------------------------------

def detections(grid: Tensor, size: float = 1.0, num_boxes: int = 2, threshold: float = 0.01,
               iou: float = 0.5, max_detections: int = 100) -> dict[str, Tensor]:
    """One image's detections: every predictor's box with its class-specific score above
    ``threshold``, then non-maximum suppression class by class (``torchvision.ops.batched_nms``,
    boxes overlapping a better one of the same class by more than ``iou`` are dropped).
    ``{"boxes": (K, 4) xyxy, "scores": (K,), "labels": (K,)}``, sorted by score, the format
    torchmetrics' MeanAveragePrecision takes, at most the ``max_detections`` best (COCO's limit).
    A box with a NaN or infinite coordinate or score is no detection and is dropped first (COCO's
    evaluation would otherwise count a NaN box as a perfect match).
    ``size`` 1 gives boxes as fractions of the image."""
    from torchvision.ops import batched_nms

    boxes, scores, labels = decode(grid.detach().float().cpu(), size, num_boxes, threshold)
    real = torch.isfinite(boxes).all(1) & torch.isfinite(scores)  # an fp16 overflow gives NaN or infinite boxes
    boxes, scores, labels = boxes[real], scores[real], labels[real]
    keep = batched_nms(boxes, scores, labels, iou)[:max_detections]  # best first; COCO scores 100 an image
    return {"boxes": boxes[keep], "scores": scores[keep], "labels": labels[keep]}


def coco_map(**options):
    """torchmetrics' ``MeanAveragePrecision`` for boxes, with COCO's own IoU thresholds (0.5, 0.55,
    ..., 0.95) and 101 recall points, built as pycocotools builds them (``numpy.linspace``, float64).
    torchmetrics 1.9 builds its defaults with ``torch.linspace``, in float32: 0.07 becomes
    0.0700000003, a recall of exactly 7/100 then falls short of the seventh point, and AP moves by
    up to a few thousandths against COCO's evaluation of the same detections (tested). ``options``
    go to ``MeanAveragePrecision`` (``class_metrics=True`` for AP per class)."""
    import numpy as np
    from torchmetrics.detection import MeanAveragePrecision

    options.setdefault("iou_thresholds", np.linspace(0.5, 0.95, 10).tolist())
    options.setdefault("rec_thresholds", np.linspace(0.0, 1.0, 101).tolist())
    return MeanAveragePrecision(iou_type="bbox", **options)


@torch.no_grad()
def detect(model: nn.Module, data, split: str = "test", threshold: float = 0.01, iou: float = 0.5,
           limit: int | None = None, batch_size: int = 200) -> list[dict[str, Tensor]]:
    """The detections of ``model`` on the images of ``data``'s ``split`` (the first ``limit``), in
    pixels of its images, one dict per image (``detections``; ``iou=1`` keeps every box: the
    predictions before non-maximum suppression). The model runs in eval mode on its own device."""
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    out = []
    try:
        for x, _ in data.batches(split, batch_size, limit=limit):
            for g in model(x.to(device)):
                out.append(detections(g, data.input_shape[-1], model.num_boxes, threshold, iou))
    finally:
        model.train(was_training)
    return out


def found(preds: list[dict], targets: list[dict], iou: float = 0.5, min_score: float = 0.25) -> list[Tensor]:
    """For each image, which of its true boxes (bool (K,)) a detection of the same class with a score
    of at least ``min_score`` overlaps by at least ``iou``: recall at one operating point, box by box."""
    from torchvision.ops import box_iou

    out = []
    for p, t in zip(preds, targets, strict=True):
        keep = p["scores"] >= min_score
        if len(t["boxes"]) == 0 or not keep.any():
            out.append(torch.zeros(len(t["boxes"]), dtype=torch.bool))
            continue
        same = t["labels"][:, None] == p["labels"][keep][None, :]
        out.append(((box_iou(t["boxes"], p["boxes"][keep]) >= iou) & same).any(1))
    return out


def truths(target: Tensor, size: float = 1.0, num_boxes: int = 2) -> dict[str, Tensor]:
    """One image's ground truth from its grid target: ``{"boxes": (K, 4), "labels": (K,)}``."""
    boxes, _, labels = decode(target.detach().float().cpu(), size, num_boxes, 0.5, first_only=True)
    return {"boxes": boxes, "labels": labels}


def precision_recall(preds: list[dict], targets: list[dict], label: int, iou: float = 0.5) -> tuple[Tensor, Tensor]:
    """(recall, precision) after each detection of class ``label``, over all images, best score first.

    Each detection is a true positive if it overlaps by at least ``iou`` a box of the class in its
    image that no better detection has taken, else a false positive (a second detection of a found
    box is a false positive: what non-maximum suppression is for). Recall is over every box of the
    class in ``targets``. Empty tensors when there are no detections; NaN recalls when no boxes."""
    from torchvision.ops import box_iou

    scored = []  # (score, image, box) of every detection of the class
    for i, p in enumerate(preds):
        for box, score in zip(p["boxes"][p["labels"] == label], p["scores"][p["labels"] == label], strict=True):
            scored.append((float(score), i, box))
    truth = [t["boxes"][t["labels"] == label] for t in targets]
    total = sum(len(t) for t in truth)
    taken = [torch.zeros(len(t), dtype=torch.bool) for t in truth]
    hits = []
    for _score, i, box in sorted(scored, key=lambda s: -s[0]):
        if len(truth[i]) == 0:
            hits.append(False)
            continue
        overlaps = box_iou(box[None], truth[i])[0]
        overlaps[taken[i]] = -1  # a box already found counts once
        best = int(overlaps.argmax())
        hit = bool(overlaps[best] >= iou)
        if hit:
            taken[i][best] = True
        hits.append(hit)
    tp = torch.tensor(hits, dtype=torch.float64).cumsum(0)
    recall = tp / total if total else torch.full_like(tp, float("nan"))
    return recall, tp / torch.arange(1, len(hits) + 1, dtype=torch.float64)


def average_precision(preds: list[dict], targets: list[dict], label: int, iou: float = 0.5,
                      points: int | None = None) -> float:
    """The average precision of class ``label`` at IoU ``iou``, step by step, as VOC defines it.

    The precision-recall curve of ``precision_recall``, made monotone (at each recall, the best
    precision at that recall or beyond) and integrated over recall: at every recall where it
    changes (``points=None``, VOC 2010 and later), or sampled at ``points`` equally spaced
    recalls (101: COCO's, what torchmetrics uses). NaN when the class has no box in ``targets``."""
    if sum(int((t["labels"] == label).sum()) for t in targets) == 0:
        return float("nan")
    recall, precision = precision_recall(preds, targets, label, iou)
    if len(recall) == 0:
        return 0.0
    envelope = interpolated(precision)
    if points is None:
        r = torch.cat([torch.zeros(1, dtype=torch.float64), recall])
        return float(((r[1:] - r[:-1]) * envelope).sum())
    # the recall thresholds as numpy's linspace (COCO's) computes them, i x 0.01 for 101: 30 x 0.01 is
    # 0.30000000000000004, so a recall of exactly 0.3 does not reach it; kept so that the figures agree
    grid = torch.arange(points, dtype=torch.float64) * (1.0 / (points - 1))
    idx = torch.searchsorted(recall, grid, side="left")  # the first detection that reaches each recall
    sampled = torch.where(idx < len(envelope), envelope[idx.clamp(max=len(envelope) - 1)], torch.zeros(()))
    return float(sampled.mean())


def interpolated(precision: Tensor) -> Tensor:
    """The monotone envelope of a precision curve: at each point, the best precision at this recall
    or beyond (VOC's interpolation; without it, AP rewards a curve's zig-zags by chance)."""
    return precision.flip(0).cummax(0).values.flip(0)


ERRORS = ("correct", "localization", "similar", "other", "background")


def error_breakdown(preds: list[dict], targets: list[dict], num_classes: int,
                    similar: list[set[int]] | tuple = (), labels=None) -> dict[str, int]:
    """The YOLO paper's Figure 4 (after Hoiem et al., 2012): for each class, its top N detections
    by score, N the class's ground-truth objects, each called
    correct (right class, IoU > 0.5 with an object not yet found), localization (right class,
    0.1 < IoU <= 0.5, or a second detection of a found object), similar (a class in one of the
    ``similar`` groups with it, IoU > 0.1), other (any other class, IoU > 0.1) or background
    (IoU <= 0.1 with every object). ``preds`` and ``targets``: one dict per image, as ``detect``
    and ``truths`` give them (boxes in corner form, labels; scores for the predictions). Returns
    the count of each kind, in ``ERRORS``' order, summed over the classes in ``labels`` (all by
    default; one class: what its detections' errors are)."""
    from torchvision.ops import box_iou

    group = {c: g for g in similar for c in g}
    counts = dict.fromkeys(ERRORS, 0)
    for c in range(num_classes) if labels is None else labels:
        n = sum(int((t["labels"] == c).sum()) for t in targets)
        found: set[tuple[int, int]] = set()  # (image, object) already detected correctly
        ranked = sorted(((float(s), i, k) for i, p in enumerate(preds)
                         for k, s in enumerate(p["scores"]) if int(p["labels"][k]) == c), reverse=True)
        for _, i, k in ranked[:n]:
            truth = targets[i]
            if len(truth["boxes"]) == 0:
                counts["background"] += 1
                continue
            overlap = box_iou(preds[i]["boxes"][k][None], truth["boxes"])[0]
            same = truth["labels"] == c
            best = int(torch.where(same, overlap, -1.0).argmax()) if same.any() else -1
            if best >= 0 and overlap[best] > 0.5 and (i, best) not in found:
                found.add((i, best))
                counts["correct"] += 1
            elif best >= 0 and overlap[best] > 0.1:
                counts["localization"] += 1
            elif any(overlap[j] > 0.1 and int(truth["labels"][j]) in group.get(c, ()) for j in range(len(overlap))):
                counts["similar"] += 1
            elif bool((overlap > 0.1).any()):
                counts["other"] += 1
            else:
                counts["background"] += 1
    return counts
