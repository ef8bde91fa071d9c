"""Transfer learning: a network trained on ImageNet, reused on other data (the transfer-learning chapter).

    imagenet = transfer.imagenet_view(data, size=96)   # 3 channels, ImageNet's mean and std
    small = transfer.per_class(imagenet, 100)          # 100 labelled training images of each class
    net = cnn_book.get_model("mobilenet_v2", weights="IMAGENET1K_V1")
    transfer.new_head(net, 10)                         # a fresh classifier for the new classes
    transfer.freeze(net, "features")                   # a linear probe: only the head trains
    train.fit(net, small, ...)

The three ways to use a pretrained network that the chapter compares are a linear classifier on
its frozen features (``freeze`` then ``fit``, or ``features`` then ``linear_probe``), fine-tuning
all of it (``fit`` with ``lr_scale`` for a smaller rate on the pretrained layers; ``unfreeze``
undoes ``freeze``, block by block if wanted), and the same architecture trained from scratch.
"""

from __future__ import annotations

from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.ops.misc import FrozenBatchNorm2d

from .data import ImageData

# What torchvision's ImageNet weights were trained on: RGB in [0, 1], normalised with these.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def imagenet_view(data: ImageData, size: int = 96) -> ImageData:
    """``data`` as ImageNet weights expect it: three channels (a grey image repeated), resized to
    ``size`` x ``size``, normalised with ImageNet's mean and standard deviation (not the data's own:
    the first layer's weights were fitted to inputs scaled that way)."""
    if data.train_x.shape[1] not in (1, 3):
        raise ValueError(f"imagenet_view takes grey or RGB images, got {data.train_x.shape[1]} channels")
    rgb = (lambda x: x.expand(-1, 3, -1, -1).contiguous()) if data.train_x.shape[1] == 1 else (lambda x: x)
    return replace(data, name=f"{data.name}, ImageNet view", train_x=rgb(data.train_x), test_x=rgb(data.test_x),
                   mean=IMAGENET_MEAN, std=IMAGENET_STD, size=size, pad=0)


def per_class(data: ImageData, n: int, seed: int = 0, repeat_to: int | None = None) -> ImageData:
    """The same data with only ``n`` training items of each class (images, or chapter 15's verses),
    drawn at random with ``seed`` (the draws are nested: the 10 per class of a seed are among its
    100 per class). ``repeat_to`` repeats them, the classes taking turns, up to that many items, so
    that runs on sets of different sizes take the same number of steps per epoch. The test set is
    unchanged."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n, the training images of each class, must be a whole number of at least 1, got {n!r}")
    gen = torch.Generator().manual_seed(seed)
    labels = data.train_y.cpu()
    picks = []
    for c, name in enumerate(data.classes):
        idx = (labels == c).nonzero().flatten()
        if len(idx) < n:
            raise ValueError(f"class {name!r} has {len(idx)} training images, fewer than {n}")
        picks.append(idx[torch.randperm(len(idx), generator=gen)[:n]])
    keep = torch.stack(picks, dim=1).flatten()  # the classes take turns: c0, c1, ..., c0, c1, ...
    if repeat_to is not None:
        keep = keep.repeat(-(-repeat_to // len(keep)))[:repeat_to]
    keep = keep.to(data.train_x.device)
    what = f"{n} per class" + (f", repeated to {repeat_to:,}" if repeat_to else "")
    return replace(data, name=f"{data.name}, {what}", train_x=data.train_x[keep], train_y=data.train_y[keep])


def new_head(model: nn.Module, num_classes: int) -> nn.Linear:
    """Replace the last linear layer of ``model.classifier`` by a fresh one for ``num_classes``
    classes (what the pretrained head knew, ImageNet's 1,000 classes, does not carry over)."""
    head = getattr(model, "classifier", None)
    if not isinstance(head, nn.Sequential) or not isinstance(head[-1], nn.Linear):
        raise ValueError(f"{type(model).__name__} has no classifier ending in a linear layer to replace")
    head[-1] = nn.Linear(head[-1].in_features, num_classes)
    if hasattr(model, "categories"):  # ImageNet's class names no longer name the outputs
        del model.categories
    return head[-1]


class FrozenBatchNorm1d(FrozenBatchNorm2d):
    """``FrozenBatchNorm2d`` for (N, C) and (N, C, L) inputs: normalise with the stored statistics, always."""

    def forward(self, x: Tensor) -> Tensor:
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


# each trainable batch norm and its frozen form
_FROZEN = {nn.BatchNorm1d: FrozenBatchNorm1d, nn.BatchNorm2d: FrozenBatchNorm2d}


def freeze(model: nn.Module, *prefixes: str) -> int:
    """Stop training the parameters whose names start with one of ``prefixes`` (all of them if none
    are given; a prefix that names no part of the model is refused, so that a typo cannot turn a
    linear probe into fine-tuning): no gradients, and their batch norms (1-d and 2-d) turned into
    frozen ones, which always normalise with the stored ImageNet statistics. A plain
    ``requires_grad = False`` is not enough: in ``model.train()`` a batch norm would still
    normalise with each batch's own statistics and move its stored ones toward the new data's.
    Returns the number of parameters frozen."""
    _check_prefixes(model, prefixes, "freeze")
    frozen = _set_trainable(model, prefixes, False)
    for kind, cold in _FROZEN.items():
        _swap_batch_norms(model, prefixes, kind, lambda bn, cold=cold: _frozen_copy(bn, cold))
    return frozen


def unfreeze(model: nn.Module, *prefixes: str) -> int:
    """Undo ``freeze`` for the parameters under ``prefixes`` (all if none are given; an unknown
    prefix is refused): gradients on again, and each frozen batch norm turned back into a trainable
    one with the same weights, statistics, momentum and count of batches, which training mode
    updates again. The usual order when fine-tuning in stages: train the new head on a frozen
    network first, then unfreeze the last blocks, then all of it.
    Returns the number of parameters unfrozen."""
    _check_prefixes(model, prefixes, "unfreeze")
    for kind, cold in _FROZEN.items():
        _swap_batch_norms(model, prefixes, cold, lambda bn, kind=kind: _trainable_copy(bn, kind),
                          exact=True)
    return _set_trainable(model, prefixes, True)


def _frozen_copy(bn: nn.Module, cold: type) -> nn.Module:
    new = cold(bn.num_features, eps=bn.eps)
    # what unfreeze gives back: torchvision's frozen batch norm keeps no momentum and no count
    count = getattr(bn, "num_batches_tracked", None)
    new.momentum, new.num_batches_tracked_value = bn.momentum, None if count is None else count.detach().clone()
    return new


def _trainable_copy(bn: nn.Module, kind: type) -> nn.Module:
    new = kind(bn.weight.numel(), eps=bn.eps, momentum=getattr(bn, "momentum", 0.1), device=bn.weight.device)
    count = getattr(bn, "num_batches_tracked_value", None)
    if count is not None:
        new.num_batches_tracked.copy_(count)
    return new


def _check_prefixes(model: nn.Module, prefixes: tuple[str, ...], what: str) -> None:
    names = [n for n, _ in model.named_modules()] + [n for n, _ in model.named_parameters()]
    for p in prefixes:
        if not isinstance(p, str) or not any(n == p or n.startswith(p + ".") for n in names):
            raise ValueError(f"{what}: {p!r} names no part of {type(model).__name__}; its top-level parts are "
                             f"{', '.join(n for n, _ in model.named_children())}")


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    """Whether ``name`` is one of the modules ``prefixes`` name, or inside one (no prefixes: all)."""
    return not prefixes or any(name == p or name.startswith(p + ".") for p in prefixes)


def _set_trainable(model: nn.Module, prefixes: tuple[str, ...], on: bool) -> int:
    """Switch gradients on or off for the parameters under ``prefixes``; the number switched."""
    changed = 0
    for name, p in model.named_parameters():
        if _under(name, prefixes) and p.requires_grad != on:
            p.requires_grad_(on)
            changed += p.numel()
    return changed


def _swap_batch_norms(model: nn.Module, prefixes: tuple[str, ...], kind: type, make, exact: bool = False) -> None:
    """Replace each ``kind`` batch norm under ``prefixes`` by ``make(old)``, carrying over its
    weight, bias and running statistics (the other kind of batch norm: frozen or trainable);
    ``exact``: that class only, not its subclasses (a frozen 1-d batch norm is a frozen 2-d one)."""
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            right_kind = type(child) is kind if exact else isinstance(child, kind)
            if right_kind and _under(f"{name}.{child_name}" if name else child_name, prefixes):
                new = make(child).to(child.weight.device)
                with torch.no_grad():
                    for key in ("weight", "bias", "running_mean", "running_var"):
                        getattr(new, key).copy_(getattr(child, key))
                setattr(module, child_name, new)


def trainable(model: nn.Module) -> int:
    """The number of parameters that training will change."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


@torch.no_grad()
def features(model: nn.Module, data: ImageData, split: str = "test", batch_size: int = 256,
             limit: int | None = None) -> tuple[Tensor, Tensor]:
    """The pooled features the classifier of ``model`` reads (its ``features`` then a global
    average pool), for the images of ``split``: ``(N, D)`` float features and ``(N,)`` labels."""
    if not hasattr(model, "features"):
        raise ValueError(f"{type(model).__name__} has no .features to take the representation from")
    model.eval()
    feats, labels = [], []
    for x, y in data.batches(split, batch_size, limit=limit):
        feats.append(F.adaptive_avg_pool2d(model.features(x), 1).flatten(1).cpu())
        labels.append(y.cpu())
    return torch.cat(feats), torch.cat(labels)


def linear_probe(train: tuple[Tensor, Tensor], test: tuple[Tensor, Tensor], num_classes: int,
                 steps: int = 300, weight_decay: float = 1e-3, seed: int = 0) -> tuple[nn.Linear, float]:
    """A multinomial logistic regression on fixed features (the features standardised with the
    training set's mean and deviation), fitted by full-batch L-BFGS with an L2 penalty
    ``weight_decay``. Returns the classifier and its test accuracy."""
    (xtr, ytr), (xte, yte) = train, test
    for what, (x, y) in (("training", train), ("test", test)):
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"linear_probe needs {what} features and as many labels, at least one; got "
                             f"{tuple(x.shape)} features and {tuple(y.shape)} labels")
    mu, sd = xtr.mean(0), xtr.std(0, unbiased=False).clamp_min(1e-6)
    xtr, xte = (xtr - mu) / sd, (xte - mu) / sd
    torch.manual_seed(seed)
    clf = nn.Linear(xtr.shape[1], num_classes)
    opt = torch.optim.LBFGS(clf.parameters(), lr=1, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(clf(xtr), ytr) + weight_decay * clf.weight.pow(2).sum() / 2
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        acc = (clf(xte).argmax(1) == yte).float().mean().item()
    return clf, acc


def grad_cam(model: nn.Module, image: Tensor, layer: nn.Module | str, target: int | None = None) -> tuple[Tensor, int]:
    """Grad-CAM (Selvaraju et al., 2017, eq. 1-2): where ``layer``'s maps support class ``target``
    (the top class by default) for one prepared ``image`` of shape (1, C, H, W). ``layer`` is a
    convolutional module of ``model`` or its name (``"features.18"``). The maps are weighted by
    their gradients averaged over space, summed, passed through a ReLU and scaled to [0, 1];
    returns the (H', W') map at ``layer``'s resolution and the class. It needs no gradient of any
    parameter, so it works on a network whose layers are frozen (a linear probe) too."""
    if isinstance(layer, str):
        try:
            layer = model.get_submodule(layer)
        except AttributeError:
            raise ValueError(f"{type(model).__name__} has no layer named {layer!r}: name one of "
                             f"model.named_modules()") from None
    if not any(m is layer for m in model.modules()):
        raise ValueError(f"the layer ({type(layer).__name__}) is not a part of this {type(model).__name__}: pass "
                         "one of its own modules (e.g. model.features[-1])")
    store = {}

    def keep(module, inputs, out):
        if not isinstance(out, Tensor) or out.dim() != 4:
            raise ValueError(f"Grad-CAM weighs a layer's maps (N, C, H, W); this {type(layer).__name__} outputs "
                             f"{tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__}: choose a "
                             "convolutional layer (the last one sees the most)")
        # the maps as a leaf whose gradient is asked for (frozen layers give maps without a graph);
        # the next layers see a copy, so that an in-place ReLU after the layer leaves the maps alone
        store["maps"] = out.detach().requires_grad_(True)
        return store["maps"].clone()

    hook = layer.register_forward_hook(keep)
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(image)
            if "maps" not in store:
                raise ValueError(f"the layer ({type(layer).__name__}) did not run when the model did: "
                                 "choose one its forward pass uses")
            target = int(logits.argmax(1)) if target is None else target
            maps = store["maps"]
            (grads,) = torch.autograd.grad(logits[0, target], maps)
    finally:
        hook.remove()
        model.train(was_training)
    weights = grads.mean(dim=(2, 3), keepdim=True)  # alpha_k: each map's importance for the class
    cam = F.relu((weights * maps).sum(1))[0].detach()
    return cam / cam.max().clamp_min(1e-12), target


def nearest_neighbour_accuracy(x: Tensor, y: Tensor) -> float:
    """Leave-one-out 1-nearest-neighbour accuracy: each row of ``x`` takes the label of its closest
    other row (Euclidean distance). A measure of how well a representation groups the classes."""
    x = x.float()
    d = torch.cdist(x, x)
    d.fill_diagonal_(float("inf"))
    return (y[d.argmin(1)] == y).float().mean().item()
