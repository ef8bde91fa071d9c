"""Figures for the chapters: architecture diagrams, sample grids, rows of images, feature maps, filters,
training curves, confusion matrices, a pretrained network's top classes on photos and heat maps over them;
the detection chapter's figures are in ``plot_detection`` and re-exported here.

Every function returns the matplotlib ``Figure`` (end the notebook line with ``;`` so it shows once).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch
from matplotlib.figure import Figure
from torch import Tensor, nn

from . import settings
from .data import ImageData
from .diagram import Diagram, diagram  # noqa: F401  (plot.diagram: a block diagram drawn from the model)
from .plot_detection import (  # noqa: F401
    _grid,  # the panels' layout, shared
    detections,
    error_breakdown,
    grid_view,
    precision_recall,
    responsible_cells,
)
from .train import History, predict


def _show(ax, img: Tensor, cmap: str = "gray") -> None:
    img = img.detach().float().cpu()
    if img.shape[0] == 3:
        img = (img - img.min()) / (img.max() - img.min() + 1e-8)
        ax.imshow(img.permute(1, 2, 0).numpy())
    else:
        ax.imshow(img[0].numpy(), cmap=cmap)
    ax.set_xticks([])
    ax.set_yticks([])


def sample_grid(data: ImageData, n: int = 24, split: str = "train", ncols: int = 8, seed: int = 0) -> Figure:
    """A grid of ``n`` random images from ``split`` with their class names."""
    x, y = data.split(split)
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    rows, cols = _grid(n, ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.5 * rows), squeeze=False)
    for ax, i in zip(axes.flat, idx.tolist(), strict=False):
        _show(ax, x[i].float() / 255)
        ax.set_title(data.classes[int(y[i])], fontsize=8)
    for ax in axes.flat[n:]:
        ax.axis("off")
    fig.suptitle(f"{n} {split} images from {data.name} ({'x'.join(map(str, x.shape[1:]))} pixels)")
    fig.tight_layout()
    return fig


def image_rows(rows: Mapping[str, Tensor] | Sequence[tuple[str, Tensor]], title: str | None = None) -> Figure:
    """Rows of grey images with values in [0, 1], one row per entry of ``rows`` (a title and an
    (n, 1, H, W) tensor; every row the same n), each titled at its left. All rows share one scale,
    0 black and 1 white, so that a row of probabilities and a row of 0/1 pixels compare pixel for
    pixel (imshow would otherwise stretch each image to its own range)."""
    rows = list(rows.items() if isinstance(rows, Mapping) else rows)
    if not rows:
        raise ValueError("image_rows needs at least one row of images")
    n = len(rows[0][1])
    for name, images in rows:
        if images.dim() != 4 or images.shape[1] != 1:
            raise ValueError(f"row {name!r}: images are (n, 1, H, W), grey; got {tuple(images.shape)}")
        if len(images) != n:
            raise ValueError(f"row {name!r} has {len(images)} images, the first row {n}: rows must be equally long")
    fig, axes = plt.subplots(len(rows), n, figsize=(max(8.0, 0.9 * n), 1.05 * len(rows) + 0.3 * bool(title)),
                             squeeze=False)
    for r, (name, images) in enumerate(rows):
        for c in range(n):
            axes[r, c].imshow(images[c, 0].detach().float().cpu().numpy(), cmap="gray", vmin=0, vmax=1)
            axes[r, c].axis("off")
        if name:
            axes[r, 0].set_title(name, fontsize=8, loc="left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


@torch.no_grad()
def feature_maps(model: nn.Module, image: Tensor, layers: Sequence[str], max_maps: int = 16,
                 ncols: int = 8, title: str | None = None) -> Figure:
    """The activations of ``layers`` (dotted names) for one ``image`` of shape (1, C, H, W);
    ``title`` (default: the model's class) heads the figure.

    One block of rows per layer: its first ``max_maps`` channels, each with its own colour scale.
    """
    modules = dict(model.named_modules())
    missing = [name for name in layers if name not in modules]
    if missing:
        raise ValueError(f"no layer named {missing}; choose from {[n for n in modules if n]}")
    captured: dict[str, Tensor] = {}
    hooks = [modules[name].register_forward_hook(
        lambda m, i, o, name=name: captured.__setitem__(name, o.detach().float().cpu())) for name in layers]
    was_training = model.training
    model.eval()
    try:
        model(image.to(next(model.parameters()).device))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    blocks = [(name, captured[name][0][:max_maps]) for name in layers]
    rows_per = [_grid(len(maps), ncols)[0] for _, maps in blocks]
    cols = min(ncols, max(len(maps) for _, maps in blocks))
    fig, axes = plt.subplots(sum(rows_per), cols, figsize=(1.25 * cols, 1.45 * sum(rows_per)), squeeze=False)
    r = 0
    for (name, maps), nrows in zip(blocks, rows_per, strict=True):
        full = captured[name][0]
        for k in range(nrows * cols):
            ax = axes[r + k // cols, k % cols]
            if k < len(maps):
                ax.imshow(maps[k].numpy(), cmap="viridis")
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(f"{name} #{k}", fontsize=7)
            else:
                ax.axis("off")
        r += nrows
        axes[r - nrows, 0].set_ylabel(f"{tuple(full.shape[1:])}", fontsize=7)
    shapes = ", ".join(f"{n}: {captured[n].shape[1]} maps of {tuple(captured[n].shape[2:])}" for n in layers)
    fig.suptitle(f"{title or f'Feature maps of {type(model).__name__}'} ({shapes})", fontsize=9)
    fig.tight_layout()
    return fig


def filters(layer: nn.Conv2d | Tensor, ncols: int = 8, title: str | None = None) -> Figure:
    """The kernels of a convolution layer (or a weight tensor (out, in, k, k)), first input channel
    (or RGB when there are three), on one diverging colour scale centred on zero."""
    w = (layer.weight if isinstance(layer, nn.Module) else layer).detach().float().cpu()
    rows, cols = _grid(w.shape[0], ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(1.1 * cols, 1.2 * rows + 0.4), squeeze=False)
    lim = w.abs().max().item() or 1.0
    for k, ax in enumerate(axes.flat):
        if k >= w.shape[0]:
            ax.axis("off")
            continue
        if w.shape[1] == 3:
            _show(ax, w[k])
        else:
            ax.imshow(w[k, 0].numpy(), cmap="RdBu_r", vmin=-lim, vmax=lim)
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"#{k}", fontsize=7)
    k = w.shape[-1]
    fig.suptitle(title or f"{w.shape[0]} filters of {k}x{k} (red > 0 > blue)", fontsize=9)
    fig.tight_layout()
    return fig


def training_curves(*histories: History, labels: Sequence[str] | None = None) -> Figure:
    """Loss (per step and per epoch) and accuracy (train and test, per epoch) of one or more runs."""
    labels = list(labels) if labels else [h.model for h in histories]
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.6))
    for h, label in zip(histories, labels, strict=True):
        steps_per_epoch = (h.steps[-1] / h.epochs[-1]) if h.steps and h.epochs else 1
        if h.steps:
            ax1.plot([s / steps_per_epoch for s in h.steps], h.step_loss, alpha=0.35, lw=1)
        line, = ax1.plot(h.epochs, h["train_loss"], "o-", label=f"{label} train")
        ax1.plot(h.epochs, h["test_loss"], "s--", color=line.get_color(), label=f"{label} test")
        ax2.plot(h.epochs, [100 * a for a in h["train_acc"]], "o-", color=line.get_color(), label=f"{label} train")
        ax2.plot(h.epochs, [100 * a for a in h["test_acc"]], "s--", color=line.get_color(), label=f"{label} test")
    ax1.set(title="Loss (thin: every step)", xlabel="epoch", ylabel="loss")
    ax2.set(title="Accuracy", xlabel="epoch", ylabel="accuracy (%)")
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    quick = " (quick mode)" if any(h.quick for h in histories) else ""
    fig.suptitle(f"Training on {histories[0].device}{quick}", fontsize=9)
    fig.tight_layout()
    return fig


def confusion_matrix(model: nn.Module, data: ImageData, split: str = "test") -> Figure:
    """Counts of (true class, predicted class) on ``split``, with per-class accuracy in the labels."""
    preds, targets = predict(model, data, split)
    k = len(data.classes)
    cm = torch.zeros(k, k, dtype=torch.long)
    cm.index_put_((targets, preds), torch.ones_like(targets), accumulate=True)
    fig, ax = plt.subplots(figsize=(7.2, 5.6))
    im = ax.imshow(cm.numpy(), cmap="Blues")
    for i in range(k):
        for j in range(k):
            v = int(cm[i, j])
            if v:
                ax.text(j, i, str(v), ha="center", va="center", fontsize=7,
                        color="white" if v > cm.max() / 2 else "black")
    per_class = cm.diag().float() / cm.sum(1).clamp(min=1)
    ax.set_xticks(range(k), data.classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(k), [f"{c} ({100 * a:.0f}%)" for c, a in zip(data.classes, per_class.tolist(),
                                                                       strict=True)], fontsize=8)
    ax.set(xlabel="predicted class", ylabel="true class (per-class accuracy)")
    acc = cm.diag().sum().item() / cm.sum().item()
    ax.set_title(f"Confusion matrix, {data.name} {split} set: {acc:.1%} of {cm.sum().item():,} correct",
                 fontsize=9)
    fig.colorbar(im, ax=ax, label=data.unit)  # images, or sequences (verses)
    fig.tight_layout()
    _say_confusions(cm, data.classes, per_class)
    return fig


def mistakes(model: nn.Module, data: ImageData, n: int = 8, cam_layer: nn.Module | str | None = None,
             split: str = "test") -> Figure:
    """The first ``n`` images of ``split`` that ``model`` gets wrong, titled true -> predicted, and
    one line printed for each. With ``cam_layer``, two more rows: Grad-CAM (``transfer.grad_cam``)
    for the predicted class and for the true one, where the evidence for each lay (the Grad-CAM
    paper's use: diagnosing a model's errors)."""
    from .transfer import grad_cam

    preds, targets = predict(model, data, split)
    wrong = (preds != targets).nonzero().flatten()[:n].tolist()
    errors = int((preds != targets).sum())
    print(f"{errors:,} of {len(targets):,} {split} images wrong ({errors / len(targets):.1%}); "
          f"the first {len(wrong)}, by index:")
    if not wrong:
        raise ValueError(f"the model gets every {split} image right: there is no mistake to show")
    rows = 1 if cam_layer is None else 3
    fig, axes = plt.subplots(rows, len(wrong), figsize=(1.5 * len(wrong), 1.55 * rows + 0.4), squeeze=False)
    for col, i in enumerate(wrong):
        image = data.images(split, i)  # (1, C, H, W), as the model sees it
        true, pred = data.classes[int(targets[i])], data.classes[int(preds[i])]
        print(f"  #{i}: {true} called {pred}")
        _show(axes[0, col], image[0])
        axes[0, col].set_title(f"#{i} {true}\n-> {pred}", fontsize=7)
        for row, cls in ((1, int(preds[i])), (2, int(targets[i])))[: rows - 1]:
            cam, _ = grad_cam(model, image, cam_layer, target=cls)
            show_heatmap(axes[row, col], image[0], cam, data.classes[cls])
            axes[row, col].title.set_fontsize(7)
    if rows == 3:
        axes[1, 0].set_ylabel("Grad-CAM:\npredicted", fontsize=7)
        axes[2, 0].set_ylabel("Grad-CAM:\ntrue class", fontsize=7)
    fig.tight_layout()
    return fig


def _say_confusions(cm: Tensor, classes: Sequence[str], per_class: Tensor, most: int = 3) -> None:
    """What the figure shows, printed, so that the text quotes it rather than reads it by eye: each
    class's accuracy, from the lowest, and the ``most`` most frequent confusions."""
    order = per_class.argsort().tolist()
    print("per-class accuracy, lowest first:")
    for start in range(0, len(order), 4):  # four classes a line: the lines fit the page's column
        print("  " + ", ".join(f"{classes[i]} {100 * per_class[i]:.1f}%" for i in order[start:start + 4]))
    off = cm.clone()
    off.fill_diagonal_(0)
    top = off.flatten().argsort(descending=True)[:most].tolist()
    k = len(classes)
    pairs = [f"{classes[t // k]} as {classes[t % k]} ({int(off.flatten()[t])})" for t in top if off.flatten()[t]]
    if pairs:
        print("most frequent confusions (true as predicted):")
        for pair in pairs:
            print(f"  {pair}")


def mask_colors(k: int) -> list[tuple[float, float, float, float]]:
    """One colour per mask value: transparent for 0 (background), then matplotlib's tab10 (tab20 beyond)."""
    cmap = plt.get_cmap("tab10" if k <= 11 else "tab20")
    return [(0.0, 0.0, 0.0, 0.0)] + [cmap(i % cmap.N) for i in range(k - 1)]


def _overlay(ax, image: Tensor, mask: Tensor, colors, title: str) -> None:
    h, w = mask.shape[-2:]
    top, left = (image.shape[-2] - h) // 2, (image.shape[-1] - w) // 2  # a valid U-Net scores the centre only
    _show(ax, image[..., top : top + h, left : left + w])
    rgba = torch.tensor(colors)[mask.long().cpu()]  # (H, W, 4)
    rgba[..., 3] = torch.where(mask.cpu() > 0, 0.55, 0.0)
    ax.imshow(rgba.numpy())
    ax.set_title(title, fontsize=8)


def segmentation(images: Tensor, masks: Tensor, classes: Sequence[str], predictions: Tensor | None = None,
                 titles: Sequence[str] | None = None) -> Figure:
    """Each image (row) with its true mask overlaid, and next to it the predicted one when given;
    one colour per class (background left clear) and a legend of the classes that appear."""
    n = len(images)
    cols = 3 if predictions is not None else 2
    fig, axes = plt.subplots(n, cols, figsize=(2.1 * cols, 2.1 * n + 0.5), squeeze=False)
    colors = mask_colors(len(classes))
    for i in range(n):
        _show(axes[i, 0], images[i])
        axes[i, 0].set_title(titles[i] if titles else "image", fontsize=8)
        _overlay(axes[i, 1], images[i], masks[i], colors, "truth")
        if predictions is not None:
            right = (predictions[i].cpu() == masks[i].cpu()).float().mean().item()
            _overlay(axes[i, 2], images[i], predictions[i], colors, f"prediction ({right:.0%} of pixels right)")
    shown = sorted(set(torch.cat([masks.flatten().cpu()] + ([predictions.flatten().cpu()] if predictions is not None
                                                               else [])).tolist()) - {0})
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors[c]) for c in shown]
    fig.legend(handles, [classes[c] for c in shown], loc="lower center", ncol=min(6, len(shown)) or 1, fontsize=7)
    fig.tight_layout(rect=(0, 0.06 if n < 4 else 0.03, 1, 1))
    return fig


def predictions(model: nn.Module, photos: dict, top: int = 5, ncols: int = 2) -> Figure:
    """Each photo beside the ``top`` classes a pretrained ``model`` gives it, with their probabilities.

    ``photos`` maps names to PIL images (``data.sample_photos()``); the model is one built with
    ``weights=``, which knows its classes and its preprocessing (``models.classify``).
    """
    from .models import classify

    print(f"the top {top} classes of each photo, with their probabilities (what the bars show):")
    rows, cols = _grid(len(photos), ncols)
    fig = plt.figure(figsize=(6.2 * cols, 2.1 * rows))
    grid = fig.add_gridspec(rows, 2 * cols, width_ratios=[1, 1.4] * cols)
    for k, (name, photo) in enumerate(photos.items()):
        r, c = divmod(k, cols)
        ax = fig.add_subplot(grid[r, 2 * c])
        ax.imshow(photo)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
        probs, names = zip(*classify(model, photo, top=top), strict=True)
        print(settings.fold(f"  {name}: " + ", ".join(f"{n} {100 * p:.1f}%" for p, n in zip(probs, names,
                                                                                            strict=True)),
                            indent="    "))
        bars = fig.add_subplot(grid[r, 2 * c + 1])
        bars.barh(range(top), [100 * p for p in probs], color="tab:blue")
        bars.set_yticks(range(top), [n[:22] for n in names], fontsize=8)
        bars.invert_yaxis()  # the most probable class on top
        bars.set_xlim(0, 100)
        bars.set_xlabel("probability (%)", fontsize=8)
        bars.tick_params(axis="x", labelsize=8)
    fig.tight_layout()
    return fig


def heatmaps(photos: dict, maps: dict, titles: dict | None = None, ncols: int = 4) -> Figure:
    """Each photo with a heat map laid over it (Grad-CAM's ``transfer.grad_cam``): ``maps`` holds one
    (H', W') tensor in [0, 1] per photo name, stretched over the centre crop the network saw
    (torchvision's ImageNet preprocessing: the shorter side resized to 256, the centre 224 x 224 kept)."""
    from PIL import Image

    rows, cols = _grid(len(photos), ncols)
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.2 * rows), squeeze=False)
    for ax, (name, photo) in zip(axes.flat, photos.items(), strict=False):
        side = round(min(photo.size) * 224 / 256)  # what the preprocessing keeps: shorter side to 256, centre 224
        left, top = (photo.width - side) // 2, (photo.height - side) // 2
        square = photo.crop((left, top, left + side, top + side)).resize((224, 224), Image.BILINEAR)
        ax.imshow(square)
        ax.imshow(maps[name].cpu().numpy(), cmap="jet", alpha=0.45, extent=(0, 224, 224, 0),
                  interpolation="bilinear")
        ax.set_title((titles or {}).get(name, name), fontsize=9)
        ax.axis("off")
    for ax in axes.flat[len(photos):]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def show_heatmap(ax, image: Tensor, heat: Tensor, title: str = "", vmax: float | None = None) -> None:
    """A prepared image (C, H, W) with a heat map stretched over it, on ``ax``: its colours span the
    map's own range, or 0 to ``vmax`` (one scale for several maps, so that they compare)."""
    _show(ax, image)
    h, w = image.shape[-2:]
    scale = {} if vmax is None else {"vmin": 0.0, "vmax": vmax}
    ax.imshow(heat.detach().cpu().numpy(), cmap="jet", alpha=0.45, extent=(0, w, h, 0), interpolation="bilinear",
              **scale)
    ax.set_title(title, fontsize=9)


def projections(spaces: dict, classes: Sequence[str]) -> Figure:
    """Side by side, each representation's first two principal components, coloured by class:
    ``spaces`` maps a title to ``(x, y)``, ``x`` of shape (N, D) and ``y`` the N labels."""
    fig, axes = plt.subplots(1, len(spaces), figsize=(4.2 * len(spaces), 4.2), squeeze=False)
    cmap = plt.get_cmap("tab10")
    for ax, (title, (x, y)) in zip(axes[0], spaces.items(), strict=True):
        x = x.float() - x.float().mean(0)
        _, _, v = torch.linalg.svd(x, full_matrices=False)
        xy = (x @ v[:2].T).numpy()
        for c, name in enumerate(classes):
            sel = (y == c).numpy()
            ax.scatter(xy[sel, 0], xy[sel, 1], s=4, color=cmap(c % 10), label=name)
        ax.set_title(title, fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0, -1].legend(fontsize=7, markerscale=3, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.tight_layout()
    return fig


def accuracy_by_labels(table: dict, title: str = "", unit: str = "images", ticks: dict | None = None) -> Figure:
    """Test accuracy against the number of labelled ``unit`` per class (log scale), one line per
    method: ``table`` maps labels per class to ``{method: accuracy}``, an accuracy or a list of them
    (one per seed: the mean, with a bar from the lowest to the highest). ``ticks`` names sizes on
    the axis (``{4660: "all (4,660)"}``)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    sizes = sorted(table)
    for i, method in enumerate(table[sizes[0]]):
        runs = [torch.as_tensor(table[n][method], dtype=torch.float64).flatten() * 100 for n in sizes]
        mean = [r.mean().item() for r in runs]
        spread = [[m - r.min().item() for m, r in zip(mean, runs, strict=True)],
                  [r.max().item() - m for m, r in zip(mean, runs, strict=True)]]
        ax.errorbar(sizes, mean, yerr=spread if max(map(len, runs)) > 1 else None, marker="o", capsize=3,
                    label=method, color=f"C{i}")
    ax.set_xscale("log")
    ax.set_xticks(sizes, [(ticks or {}).get(n, f"{n:,}") for n in sizes])
    ax.minorticks_off()
    ax.set_xlabel(f"labelled training {unit} per class")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
