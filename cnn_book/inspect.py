"""Look inside a model: a layer-by-layer table with nested blocks, output shapes, parameters,
FLOPs and receptive fields.

The rows, shapes and parameter counts come from ``torchinfo`` (nested blocks in the order they
run); FLOPs from ``torch.utils.flop_counter`` (one multiply-add = 2 FLOPs; convolutions and
matrix products, the work that dominates); receptive fields from a pass that follows the
tensor from layer to layer and stops where the network branches or flattens, and, for any
network, one output pixel's receptive field measured by gradients (``receptive_field``).
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torchinfo
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from .settings import fold

_SPATIAL = (nn.Conv2d, nn.MaxPool2d, nn.AvgPool2d)
_POINTWISE = (nn.ReLU, nn.Tanh, nn.Sigmoid, nn.GELU, nn.SiLU, nn.Hardswish, nn.ReLU6, nn.LeakyReLU,
              nn.BatchNorm2d, nn.Dropout, nn.Dropout2d, nn.Identity, nn.LocalResponseNorm)


@dataclass
class LayerRow:
    name: str  # dotted path, as in model.named_modules() and the state_dict
    type: str
    depth: int
    output_shape: tuple[int, ...]
    params: int  # this module's parameters, its children's included
    flops: int  # forward FLOPs for one input, children included
    receptive_field: int | None  # in input pixels; None where it is not defined
    is_leaf: bool


@dataclass
class ModelSummary:
    """The table ``summary`` returns; ``print`` it, or read ``rows`` and the totals."""

    model: str
    input_shape: tuple[int, ...]
    rows: list[LayerRow]
    total_params: int
    trainable_params: int
    total_flops: int

    @property
    def total_macs(self) -> int:
        return self.total_flops // 2

    def row(self, name: str) -> LayerRow:
        for r in self.rows:
            if r.name == name:
                return r
        raise KeyError(f"no layer named {name!r}; names: {', '.join(r.name for r in self.rows)}")

    def __str__(self) -> str:
        head = ("Layer (type)", "Output shape", "Params", "FLOPs", "RF")
        body = [
            (
                "  " * r.depth + f"{r.name.rsplit('.', 1)[-1]} ({r.type})",
                str(list(r.output_shape)),
                f"{r.params:,}" if r.params or r.is_leaf else "",
                _si(r.flops) if r.flops else "",
                "" if r.receptive_field is None else str(r.receptive_field),
            )
            for r in self.rows
        ]
        widths = [max(len(t[i]) for t in [head, *body]) for i in range(len(head))]
        line = lambda t: "  ".join(  # noqa: E731
            c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(t, widths, strict=True)))
        rule = "-" * len(line(head))
        shape = "x".join(str(d) for d in self.input_shape)
        return "\n".join([
            f"{self.model} on {shape} tokens" if len(self.input_shape) == 1 else f"{self.model} on a {shape} input",
            rule, line(head), rule, *map(line, body), rule,
            f"Total parameters:     {self.total_params:,}",
            f"Trainable parameters: {self.trainable_params:,}",
            f"Forward FLOPs:        {self.total_flops:,} ({_si(self.total_flops)}; "
            f"{_si(self.total_macs)} multiply-adds)",
        ])

    __repr__ = __str__


def _si(n: int) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f}{unit}"
    return str(n)


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """The number of (trainable) parameters of ``model``."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def _default_shape(model: nn.Module, input_shape) -> tuple[int, ...]:
    shape = input_shape or getattr(model, "input_shape", None)
    if shape is None:
        raise ValueError(f"give input_shape=(C, H, W): {type(model).__name__} does not say what it expects")
    return tuple(shape)


def flops_by_module(model: nn.Module, x: Tensor) -> dict[str, int]:
    """Forward FLOPs of every module (dotted name; '' is the whole model), children included."""
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    out = {}
    for key, ops in counter.get_flop_counts().items():
        if key == "Global":
            continue
        name = key.split(".", 1)[1] if "." in key else ""  # "LeNet5.features.0" -> "features.0"
        out[name] = int(sum(ops.values()))
    return out


def receptive_fields(model: nn.Module, x: Tensor) -> dict[str, int]:
    """Receptive field (pixels of the input one output pixel sees) after each layer of a chain.

    r_out = r_in + (k - 1) * d * j_in and j_out = j_in * s, where j is the stride of the grid in
    input pixels. Defined while each layer reads the previous layer's output; a layer fed by
    anything else (a branch, an addition, a flatten) gets no entry, nor does anything after it.
    A module called more than once (one pooling layer shared by several levels) gets no entry
    either: it has no single receptive field.
    """
    # Each tensor on the chain carries its (r, j) as an attribute: in-place layers (ReLU(inplace=True))
    # return the same object and keep it; a tensor made by anything else (x + y, flatten) has none.
    x = x.clone()
    x._cnn_book_rf = (1, 1)
    result: dict[str, int] = {}
    calls: dict[str, int] = {}
    hooks = []

    def spec(m: nn.Module) -> tuple[int, int, int] | None:
        if hasattr(m, "receptive_field"):  # blocks of the book that declare (kernel, stride)
            k, s = m.receptive_field
            return k, s, 1
        if isinstance(m, _SPATIAL):
            pair = lambda v: v if isinstance(v, int) else v[0]  # noqa: E731
            stride = m.stride if m.stride is not None else m.kernel_size
            return pair(m.kernel_size), pair(stride), pair(getattr(m, "dilation", 1))
        if isinstance(m, _POINTWISE):
            return 1, 1, 1
        return None

    def hook(name):
        def fn(m, inputs, output):
            calls[name] = calls.get(name, 0) + 1
            src = getattr(inputs[0], "_cnn_book_rf", None) if inputs and isinstance(inputs[0], Tensor) else None
            sp = spec(m)
            if src is None or sp is None or not isinstance(output, Tensor):
                return
            (r, j), (k, s, d) = src, sp
            output._cnn_book_rf = (r + (k - 1) * d * j, j * s)
            result[name] = output._cnn_book_rf[0]
        return fn

    chosen = [(n, m) for n, m in model.named_modules() if n and (hasattr(m, "receptive_field")
              or not any(True for _ in m.children()))]
    skip = tuple(n + "." for n, m in chosen if hasattr(m, "receptive_field"))
    for n, m in chosen:
        if not n.startswith(skip):
            hooks.append(m.register_forward_hook(hook(n)))
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in hooks:
            h.remove()
    return {n: r for n, r in result.items() if calls[n] == 1}


@dataclass(frozen=True)
class ReceptiveField:
    """The input pixels one output pixel depends on: rows and columns, first and last (inclusive)."""

    pixel: tuple[int, int]  # the output pixel (row, column)
    rows: tuple[int, int]
    cols: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) of the window."""
        return self.rows[1] - self.rows[0] + 1, self.cols[1] - self.cols[0] + 1

    def context(self, offset: int = 0) -> tuple[int, int, int, int]:
        """(above, below, left, right): how far the window reaches around the input pixel that sits
        at the output pixel's place, ``offset`` pixels in from the input's corner (92 for the
        paper's U-Net, whose output is the input cropped by 92 on every side)."""
        r, c = self.pixel[0] + offset, self.pixel[1] + offset
        return r - self.rows[0], self.rows[1] - r, c - self.cols[0], self.cols[1] - c


# what the probe of receptive_field turns each kind of layer into: linear layers with positive
# weights, so that every path from an input pixel to the output adds to the gradient and none cancels
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid,
                nn.Tanh, nn.ELU, nn.Dropout, nn.Dropout2d, nn.BatchNorm2d, nn.BatchNorm1d, nn.LocalResponseNorm)


def _linear_probe(model: nn.Module) -> nn.Module:
    probe = copy.deepcopy(model).double().eval()
    for name, module in list(probe.named_modules()):
        parent = probe.get_submodule(name.rsplit(".", 1)[0]) if "." in name else probe
        child = name.rsplit(".", 1)[-1]
        if not name:
            continue
        if isinstance(module, _ACTIVATIONS):
            setattr(parent, child, nn.Identity())
        elif isinstance(module, nn.MaxPool2d):  # a max picks one input; the average counts them all
            setattr(parent, child, nn.AvgPool2d(module.kernel_size, module.stride, module.padding,
                                                ceil_mode=module.ceil_mode))
        elif isinstance(module, nn.AdaptiveMaxPool2d):
            setattr(parent, child, nn.AdaptiveAvgPool2d(module.output_size))
    with torch.no_grad():
        for module in probe.modules():
            for pname, p in module.named_parameters(recurse=False):
                fan_in = p[0].numel() if p.dim() > 1 else 1
                p.fill_(0.0 if pname == "bias" else 1.0 / fan_in)  # positive; 1/fan-in keeps values near 1
    return probe


def receptive_field(model: nn.Module, input_shape: tuple[int, ...], pixel: tuple[int, int] | None = None
                    ) -> ReceptiveField:
    """The input pixels that output ``pixel`` (row, column; the centre by default) of ``model``'s
    output map depends on, measured by the gradient of that pixel with respect to the input, on a
    copy of the model made linear and positive (activations and batch norms the identity, max
    pooling average pooling, every weight positive), so that every path counts and none cancels.
    Unlike the layer-by-layer formula, it holds for any network: branches, skip connections,
    up-convolutions and crops, and it shows that the window can depend on the pixel's position
    (``receptive_field_of_each`` measures many pixels in one pass)."""
    return receptive_field_of_each(model, input_shape, None if pixel is None else [pixel])[0]


def receptive_field_of_each(model: nn.Module, input_shape: tuple[int, ...],
                            pixels: list[tuple[int, int]] | None = None) -> list[ReceptiveField]:
    """``receptive_field`` for several output pixels at once: one copy of the input per pixel in one
    batch, one forward and one backward pass (the probe has no batch statistics, so the copies
    do not mix)."""
    if pixels is not None and not all(len(p) == 2 and all(isinstance(v, int) for v in p) for p in pixels):
        raise ValueError(f"pixel is an output pixel as (row, column), got {pixels!r}")
    probe = _linear_probe(model)
    n = 1 if pixels is None else len(pixels)
    x = torch.ones(n, *input_shape, dtype=torch.float64, requires_grad=True)
    out = probe(x)
    out = out[0] if isinstance(out, (tuple, list)) else out
    if not isinstance(out, Tensor) or out.dim() != 4:
        raise ValueError(f"receptive_field needs a model whose output is a map (N, C, H, W); "
                         f"{type(model).__name__} gives {tuple(out.shape) if isinstance(out, Tensor) else out!r}")
    h, w = out.shape[-2:]
    pixels = [(h // 2, w // 2)] if pixels is None else [tuple(p) for p in pixels]
    for r, c in pixels:
        if not (0 <= r < h and 0 <= c < w):
            raise ValueError(f"pixel {(r, c)} is outside the {h}x{w} output map")
    picked = torch.stack([out[b, :, r, c].sum() for b, (r, c) in enumerate(pixels)]).sum()
    (grad,) = torch.autograd.grad(picked, x)
    found = []
    for b, pixel in enumerate(pixels):
        seen = grad[b].abs().sum(0) > 0  # (H_in, W_in): the input pixels with a path to the output pixel
        rows, cols = seen.any(1).nonzero().flatten(), seen.any(0).nonzero().flatten()
        found.append(ReceptiveField(pixel, (int(rows.min()), int(rows.max())), (int(cols.min()), int(cols.max()))))
    return found


def summary(model: nn.Module, input_shape: tuple[int, ...] | None = None, depth: int = 4) -> ModelSummary:
    """The layer-by-layer table of ``model`` for one input of ``input_shape`` (C, H, W).

    ``input_shape`` defaults to the model's ``input_shape``; ``depth`` limits how deep nested
    blocks are listed (parameters and FLOPs of deeper layers are counted in their parents).
    """
    shape = _default_shape(model, input_shape)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    dtype = getattr(model, "input_dtype", torch.float32)  # token ids for a language model
    x = torch.zeros(1, *shape, device=device, dtype=dtype)
    try:
        try:
            stats = torchinfo.summary(model, input_size=(1, *shape), depth=depth, verbose=0, device=device,
                                      dtypes=[dtype])
        except RuntimeError:  # torchinfo hides the model's own error ("Failed to run torchinfo"): show that one
            with torch.no_grad():
                model(x)
            raise
        flops = flops_by_module(model, x)
        rfs = receptive_fields(model, x)
    finally:
        model.train(was_training)
    names = {id(m): n for n, m in model.named_modules()}
    rows = []
    for info in stats.summary_list:
        name = names.get(id(info.module), info.var_name)
        if not name or info.depth > depth or not info.output_size:
            continue  # the model itself, too deep, or a container that is never called (ModuleList)
        rows.append(LayerRow(
            name=name, type=type(info.module).__name__, depth=info.depth - 1,
            output_shape=tuple(info.output_size[1:]), params=info.num_params,
            flops=flops.get(name, 0), receptive_field=rfs.get(name), is_leaf=info.is_leaf_layer,
        ))
    return ModelSummary(
        model=getattr(model, "name", None) or type(model).__name__, input_shape=shape, rows=rows,
        total_params=count_parameters(model), trainable_params=count_parameters(model, trainable_only=True),
        total_flops=flops.get("", 0),
    )


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...] | None = None) -> list[tuple[str, tuple]]:
    """(name, output shape without the batch) of every leaf layer in the order they run."""
    return [(r.name, r.output_shape) for r in summary(model, input_shape, depth=99).rows if r.is_leaf]


def gradient_norms(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """The L2 norm of the cross-entropy's gradient with respect to each convolution's weight, for one
    batch ``(x, y)`` in training mode, by layer name in the order the layers are defined. The model's
    own ``.grad`` fields are left as they were."""
    convs = [(n, m.weight) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    was_training = model.training
    model.train()
    try:
        out = model(x)
        logits = out[0] if isinstance(out, tuple) else out
        loss = torch.nn.functional.cross_entropy(logits, y)
        grads = torch.autograd.grad(loss, [w for _, w in convs])
    finally:
        model.train(was_training)
    return {n: g.norm().item() for (n, _), g in zip(convs, grads, strict=True)}


# The patterns a first-layer kernel is read by, as an orthonormal basis over its k x k grid: its
# mean (a blur or a brightness detector), the two ramps (an edge: one side against the other, in
# the direction of the ramp) and the centre against its surround.
PATTERNS = ("mean", "edge", "centre-surround")


def kernel_patterns(weight: Tensor, share: float = 0.6) -> list[dict]:
    """How much of each kernel of a convolution's ``weight`` (out, in, k, k) each simple pattern
    explains: the shares of its squared norm in its mean, in the two linear ramps together (an
    edge; ``angle`` is the direction in which the weights rise, in degrees, 0 = to the right, 90 =
    downwards) and in centre-against-surround, summed over the input channels; and ``peak``, the
    largest single weight's share. ``kind`` names the pattern that explains at least ``share`` of
    the kernel, "one weight" when a single weight holds at least half of it, else "mixed". A
    figure of filters is read through these numbers, not by eye."""
    w = weight.detach().float().cpu()
    if w.dim() != 4 or w.shape[-1] != w.shape[-2] or w.shape[-1] < 3:
        raise ValueError(f"kernel_patterns reads square kernels of 3x3 or more, (out, in, k, k); got {tuple(w.shape)}")
    k = w.shape[-1]
    r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    centre = torch.zeros(k, k)
    centre[k // 2, k // 2] = 1.0
    basis = {"mean": torch.ones(k, k), "x": xx, "y": yy, "centre": centre - centre.mean()}
    basis = {n: b / b.norm() for n, b in basis.items()}  # orthonormal: the ramps and the centre have zero mean
    total = w.pow(2).sum((1, 2, 3)).clamp_min(1e-12)
    proj = {n: (w * b).sum((2, 3)) for n, b in basis.items()}  # (out, in) coefficients
    shares = {"mean": proj["mean"].pow(2).sum(1) / total,
              "edge": (proj["x"].pow(2) + proj["y"].pow(2)).sum(1) / total,
              "centre-surround": proj["centre"].pow(2).sum(1) / total}
    angle = torch.rad2deg(torch.atan2(proj["y"].sum(1), proj["x"].sum(1))) % 360  # 0 to 360
    peak = w.pow(2).flatten(1).max(1).values / total
    rows = []
    for i in range(w.shape[0]):
        best = max(PATTERNS, key=lambda n: shares[n][i].item())
        kind = best if shares[best][i] >= share else "one weight" if peak[i] >= 0.5 else "mixed"
        rows.append({"index": i, "kind": kind, "peak": peak[i].item(), "angle": angle[i].item(),
                     **{n: shares[n][i].item() for n in PATTERNS}})
    return rows


def low_frequency_share(weight: Tensor, keep: int = 2) -> Tensor:
    """For each kernel of ``weight`` (out, in, k, k), the share of its squared norm at the lowest
    spatial frequencies, at most ``keep`` cycles across the kernel each way (by its 2-D discrete
    Fourier transform, over all its input channels): near 1 for smooth kernels (a mean, a slow
    ramp), near the share of low frequencies among all, (2 keep + 1)^2 / k^2, for white noise."""
    if weight.dim() != 4 or weight.shape[-1] != weight.shape[-2]:
        raise ValueError(f"low_frequency_share takes square kernels (out, in, k, k); got {tuple(weight.shape)}")
    w = weight.detach().float().cpu()
    power = torch.fft.fft2(w).abs().pow(2).sum(1)  # (out, k, k): summed over the input channels
    low = (torch.fft.fftfreq(w.shape[-1]) * w.shape[-1]).abs() <= keep  # the frequencies kept, each way
    return power[:, low][:, :, low].sum((1, 2)) / power.sum((1, 2))


def describe_kernels(weight: Tensor, share: float = 0.6) -> str:
    """``kernel_patterns`` as lines to print under a filter figure: which kernels are edges (with
    their direction), centre-surround, a mean, one strong weight, or none of these."""
    rows = kernel_patterns(weight, share)
    lines = [f"{len(rows)} kernels; a pattern is named when it holds >= {share:.0%} of the kernel's squared norm"]
    for kind in (*PATTERNS, "one weight", "mixed"):
        of_kind = [r for r in rows if r["kind"] == kind]
        if not of_kind:
            continue
        items = ", ".join(f"#{r['index']} ({r['angle']:.0f} deg)" if kind == "edge" else f"#{r['index']}"
                          for r in of_kind)
        lines.append(fold(f"  {kind}: {len(of_kind)}: {items}", indent="    "))
    return "\n".join(lines)


@torch.inference_mode()
def _benchmark_timer():
    """``torch.utils.benchmark.Timer``, imported without the warning its C++-extension helper logs on
    a machine with a CUDA compiler but no GPU ("No CUDA runtime is found"), which says nothing about
    timing and would sit in a chapter's output."""
    log = logging.getLogger("torch.utils.cpp_extension")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        log.setLevel(level)
    return Timer


def latency(model: nn.Module, input_shape: tuple[int, ...] | None = None, batch_size: int = 1,
            min_run_time: float = 0.2, device: torch.device | str = "cpu") -> float:
    """Median wall time in seconds of one forward pass of a ``batch_size`` batch in eval mode: the
    figure a user of the model waits for, which FLOPs only estimate (memory traffic, kernel launches
    and poorly vectorised layers such as depthwise convolutions cost time that FLOPs do not count).

    Measured by ``torch.utils.benchmark.Timer.blocked_autorange``: untimed passes warm up and choose
    how many passes a timed block holds (enough that the clock's own cost is negligible), then
    blocks are timed until ``min_run_time`` seconds are spent; the median block, per pass. The Timer
    synchronises CUDA work before each clock reading and runs on all of torch's threads."""
    Timer = _benchmark_timer()
    device = torch.device(device)
    shape = _default_shape(model, input_shape)
    if getattr(model, "input_dtype", None) == torch.long:  # token ids
        x = torch.randint(0, model.vocab_size, (batch_size, *shape), device=device)
    else:
        x = torch.randn(batch_size, *shape, device=device)
    was_training = model.training
    model.eval().to(device)
    timer = Timer("model(x)", globals={"model": model, "x": x}, num_threads=torch.get_num_threads())
    try:
        return timer.blocked_autorange(min_run_time=min_run_time).median
    finally:
        model.train(was_training)
