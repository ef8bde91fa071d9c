"""Segmentation's scores and loss: the confusion matrix and what is read from it (IoU, pixel accuracy),
the Dice loss, and the part of the masks an unpadded U-Net's output covers."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


def dense_targets(logits: Tensor, y: Tensor) -> Tensor:
    """The targets that ``logits`` score: ``y`` itself, or for a segmentation model whose output is
    smaller than its input (U-Net without padding) the central part of the masks ``y`` it covers."""
    if logits.dim() == 4 and y.shape[-2:] != logits.shape[-2:]:
        h, w = logits.shape[-2:]
        top, left = (y.shape[-2] - h) // 2, (y.shape[-1] - w) // 2
        y = y[..., top : top + h, left : left + w]
    return y


def dice_loss(logits: Tensor, y: Tensor, eps: float = 1.0) -> Tensor:
    """1 - the soft Dice coefficient, averaged over classes: for each class c,
    Dice_c = (2 sum p_c g_c + eps) / (sum p_c + sum g_c + eps) over all pixels of the batch, with p_c
    the softmax probability and g_c the one-hot mask. Insensitive to how many pixels a class has,
    which cross-entropy is not (Milletari et al., 2016)."""
    p = logits.float().softmax(1)  # (N, C, H, W)
    g = F.one_hot(y, p.shape[1]).permute(0, 3, 1, 2).float()
    dims = (0, 2, 3)
    dice = (2 * (p * g).sum(dims) + eps) / (p.sum(dims) + g.sum(dims) + eps)
    return 1 - dice.mean()


def confusion_matrix(pred: Tensor, target: Tensor, num_classes: int) -> Tensor:
    """``(K, K)`` counts: ``[t, p]`` is the number of pixels (or items) of true class t predicted as p."""
    k = num_classes
    return torch.bincount((target * k + pred).flatten(), minlength=k * k).view(k, k)


@dataclass
class SegmentationScores:
    """Per-pixel scores of a segmentation model. ``confusion[t, p]`` counts pixels of true class t
    predicted as p. IoU_c = TP / (TP + FP + FN); ``mean_iou`` averages it over the classes present
    (in the truth or the predictions); ``class_accuracy[c]`` is the share of class-c pixels found."""

    classes: list[str]
    confusion: Tensor
    loss: float

    @property
    def iou(self) -> Tensor:
        tp = self.confusion.diag().double()
        union = self.confusion.sum(0).double() + self.confusion.sum(1).double() - tp
        return torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))

    @property
    def mean_iou(self) -> float:
        return self.iou.nanmean().item()

    @property
    def class_accuracy(self) -> Tensor:
        total = self.confusion.sum(1).double()
        return torch.where(total > 0, self.confusion.diag().double() / total.clamp(min=1),
                           torch.full_like(total, float("nan")))

    @property
    def pixel_accuracy(self) -> float:
        return (self.confusion.diag().sum() / self.confusion.sum()).item()

