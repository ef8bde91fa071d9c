"""Block diagrams drawn from a model itself, so that a picture cannot drift from the code.

``diagram(model_or_block, input_shape=None, depth=...)`` runs one forward pass through
torchview, which records every module and function call and how tensors flow between them,
and draws the result as a textbook figure with graphviz: a box per layer with its output
shape, branches side by side, skip connections as arcs, "+" for addition, "×" for a
product, "concat" for concatenation. Conv → BN → activation chains are drawn as one box,
and a run of identical boxes (the same layers, settings and parameter counts, not only the same
label) as one box "× n".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from .inspect import _default_shape, count_parameters

# Layers drawn inside the box of the layer before them ("3×3 conv, 64 · BN · ReLU").
_FUSED = (nn.BatchNorm1d, nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm, nn.ReLU, nn.ReLU6, nn.SiLU,
          nn.GELU, nn.Sigmoid, nn.Tanh, nn.Hardswish, nn.Hardsigmoid, nn.LeakyReLU, nn.Dropout,
          nn.Dropout2d, nn.LocalResponseNorm)
_FUSED_FUNCTIONS = {"relu", "relu_", "sigmoid", "silu", "gelu", "dropout", "tanh"}
# Fill colours by kind of layer (pale, so that the text stays readable in print).
_COLORS = {"conv": "#d6e6f5", "deconv": "#d9ecd0", "pool": "#f8dcc8", "fc": "#e6dcf0",
           "block": "#fbf0c0", "merge": "#ffffff", "other": "#eeeeee", "io": "#ffffff"}
_SYMBOLS = {"add": "+", "add_": "+", "__add__": "+", "__iadd__": "+", "mul": "×", "mul_": "×",
            "__mul__": "×", "cat": "concat", "concat": "concat", "stack": "stack"}


@dataclass
class Box:
    """One box of a diagram: its text, the modules it stands for and its output shape."""

    label: str
    kind: str
    shape: tuple[int, ...] | None
    modules: list[str] = field(default_factory=list)
    detail: list[str] = field(default_factory=list)
    repeat: int = 1
    # what the box's layers are (type and settings of each), so that only identical layers roll into
    # one box "× n": two convolutions with the same label but other input widths stay apart
    layers: tuple = ()


def _pair(v) -> str:
    v = v if isinstance(v, tuple) else (v, v)
    return f"{v[0]}×{v[1]}" if v[0] != v[1] else f"{v[0]}×{v[0]}"


def _one(v) -> int:
    return v[0] if isinstance(v, tuple) else v


def describe(m: nn.Module) -> tuple[str, str]:
    """(label, kind) of a layer as a textbook writes it: "3×3 conv, 64, /2", "max pool 2×2"."""
    if isinstance(m, nn.ConvTranspose2d):
        return f"{_pair(m.kernel_size)} up-conv, {m.out_channels}", "deconv"
    if isinstance(m, nn.Conv2d):
        stride = f", /{_one(m.stride)}" if _one(m.stride) > 1 else ""
        if m.groups == m.in_channels and m.groups > 1:
            return f"{_pair(m.kernel_size)} depthwise{stride}", "conv"
        groups = f", {m.groups} groups" if m.groups > 1 else ""
        return f"{_pair(m.kernel_size)} conv, {m.out_channels}{stride}{groups}", "conv"
    if isinstance(m, (nn.MaxPool2d, nn.AvgPool2d)):
        kind = "max" if isinstance(m, nn.MaxPool2d) else "avg"
        stride = _one(m.stride or m.kernel_size)
        return f"{kind} pool {_pair(m.kernel_size)}" + (f", /{stride}" if stride > 1 else ""), "pool"
    if isinstance(m, (nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)):
        size = _one(m.output_size)
        kind = "avg" if isinstance(m, nn.AdaptiveAvgPool2d) else "max"
        if size == 1:
            return f"global {kind} pool", "pool"
        return f"adaptive {kind} pool to {_pair(m.output_size)}", "pool"
    if isinstance(m, nn.Linear):
        return f"FC, {m.out_features}", "fc"
    if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
        return "BN", "other"
    if isinstance(m, (nn.Dropout, nn.Dropout2d)):
        return f"dropout {m.p:g}", "other"
    if isinstance(m, nn.LocalResponseNorm):
        return "LRN", "other"
    if isinstance(m, nn.Flatten):
        return "flatten", "other"
    if len(list(m.children())) == 0:
        return type(m).__name__, "other"
    return type(m).__name__, "block"


def _shape_text(shape) -> str:
    return "×".join(str(s) for s in shape[1:]) if shape else ""


@dataclass(repr=False)
class Diagram:
    """Boxes and arrows of a model; shows itself as SVG in a notebook (graphviz)."""

    boxes: dict[str, Box]
    edges: list[tuple[str, str]]
    direction: str = "TB"
    title: str | None = None

    def __repr__(self) -> str:
        return f"<Diagram{': ' + self.title if self.title else ''}, {len(self.boxes)} boxes, {len(self.edges)} arrows>"

    def graph(self):
        import graphviz

        g = graphviz.Digraph(graph_attr={
            "rankdir": self.direction, "nodesep": "0.25", "ranksep": "0.22", "fontname": "Helvetica",
            "fontsize": "13", "labelloc": "t", "label": self.title or "", "bgcolor": "white",
            "pad": "0.1"},
            node_attr={"fontname": "Helvetica", "fontsize": "11", "shape": "box", "style": "rounded,filled",
                       "color": "#555555", "penwidth": "0.8", "margin": "0.12,0.05", "height": "0.3"},
            edge_attr={"color": "#444444", "arrowsize": "0.6", "penwidth": "0.9"})
        for key, box in self.boxes.items():
            text = _html(box.label + (f" ×{box.repeat}" if box.repeat > 1 else ""))
            lines = [f"<B>{text}</B>" if box.kind == "block" else text]
            each = " each" if box.repeat > 1 and box.kind == "block" else ""
            lines += [f'<FONT POINT-SIZE="9">{_html(d)}{each}</FONT>' for d in box.detail]
            if box.shape and box.kind != "io":
                lines.append(f'<FONT POINT-SIZE="9" COLOR="#555555">{_shape_text(box.shape)}</FONT>')
            label = "<" + "<BR/>".join(lines) + ">"
            if box.kind == "merge":
                circle = box.label in ("+", "×")
                g.node(key, label=box.label if circle else label, shape="circle" if circle else "box",
                       style="filled" if circle else "rounded,filled", fillcolor=_COLORS["merge"],
                       width="0.3", fixedsize="true" if circle else "false", fontsize="14" if circle else "11")
            elif box.kind == "io":
                g.node(key, label=label, shape="plaintext", style="")
            else:
                g.node(key, label=label, fillcolor=_COLORS.get(box.kind, _COLORS["other"]))
        for a, b in self.edges:
            g.edge(a, b)
        return g

    def _repr_mimebundle_(self, include=None, exclude=None):
        import graphviz

        try:
            return {"image/svg+xml": self.graph().pipe(format="svg", encoding="utf-8"), "text/plain": repr(self)}
        except graphviz.ExecutableNotFound:  # the Python package is there, the program that lays out is not
            return {"text/plain": f"{self!r}: drawing it needs the graphviz program, which is not installed "
                                  f"(Debian/Ubuntu: sudo apt-get install graphviz; macOS: brew install graphviz; "
                                  f"conda install graphviz). Colab has it."}

    def save(self, path: str) -> None:
        """Write the diagram; the format follows the file's suffix (.svg, .png, .pdf)."""
        fmt = path.rsplit(".", 1)[-1]
        with open(path, "wb") as f:
            f.write(self.graph().pipe(format=fmt))


def _html(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def diagram(model: nn.Module, input_shape: tuple[int, ...] | None = None, depth: int = 99,
            fuse: bool = True, roll: bool = True, direction: str = "TB", title: str | None = None) -> Diagram:
    """Draw ``model`` (a whole network or one block) as a block diagram.

    ``input_shape`` (C, H, W) defaults to the model's own ``input_shape``. ``depth`` is how many
    levels of submodules to open: ``depth=1`` draws the model's children as boxes (a ResNet's
    stages, say), the default opens everything down to single layers. ``fuse`` draws BN,
    activation and dropout inside the box of the layer before them; ``roll`` draws a run of
    identical boxes as one box "× n". ``direction`` is graphviz's rankdir ("TB" or "LR").
    """
    from torchview import draw_graph

    shape = _default_shape(model, input_shape)
    # where the model is: a model built on the meta device is traced there, computing nothing
    device = next(iter(model.parameters()), torch.empty(0)).device
    was_training = model.training
    try:
        x = torch.zeros(1, *shape, dtype=getattr(model, "input_dtype", torch.float32), device=device)  # pixels or ids
        graph = draw_graph(model, input_data=x, depth=depth, hide_inner_tensors=True,
                           hide_module_functions=True, roll=False, expand_nested=False, device=device,
                           mode="eval")
    except Exception as e:  # torchview wraps the model's own error; say which model and input failed
        raise ValueError(f"could not trace {type(model).__name__} on an input of shape {shape}: {e}") from e
    finally:
        model.train(was_training)
    names = {id(m): (n or type(model).__name__, m) for n, m in model.named_modules()}
    boxes: dict[str, Box] = {}
    edges: list[tuple[str, str]] = []
    for a, b in graph.edge_list:
        for node in (a, b):
            key = str(node.node_id)
            if key in boxes:
                continue
            kind_name = type(node).__name__
            if kind_name == "TensorNode":
                io = "output" if node is b else "input"  # a tensor node starts or ends the graph
                boxes[key] = Box(f"{io} {_shape_text(node.tensor_shape)}", "io", tuple(node.tensor_shape))
            elif kind_name == "ModuleNode":
                name, module = names.get(node.compute_unit_id, (node.name, None))
                label, kind = describe(module) if module is not None else (node.name, "block")
                if type(module) in (nn.Sequential, nn.ModuleList) and len(module):  # a plain stage: say of what
                    label = f"{name}: {len(module)} × {type(module[0]).__name__}"
                detail = []
                if kind == "block" and module is not None:
                    params = count_parameters(module)
                    detail.append(f"{params:,} params" if params < 10**6 else f"{params / 1e6:.2f} M params")
                layers = ((type(module).__name__, module.extra_repr(), count_parameters(module)),) if module else ()
                boxes[key] = Box(label, kind, tuple(node.output_shape[0]), [name], detail, layers=layers)
            else:  # a function called in a forward: torch.add, torch.cat, x.flatten, x[...] ...
                label = _SYMBOLS.get(node.name, node.name.strip("_"))
                kind = "merge" if node.name in _SYMBOLS else "other"
                if node.name == "__getitem__":
                    label = "crop"
                boxes[key] = Box(label, kind, tuple(node.output_shape[0]), [f"<{node.name}>"])
        edges.append((str(a.node_id), str(b.node_id)))
    edges = list(dict.fromkeys(edges))
    if fuse:
        _fuse(boxes, edges)
    if roll:
        _roll(boxes, edges)
    return Diagram(boxes, edges, direction, title)


def _links(edges):
    parents, children = {}, {}
    for a, b in edges:
        children.setdefault(a, []).append(b)
        parents.setdefault(b, []).append(a)
    return parents, children


def _merge(boxes, edges, keep: str, gone: str) -> list[tuple[str, str]]:
    """Remove box ``gone`` (the only child of ``keep``); its children become ``keep``'s."""
    del boxes[gone]
    return [(keep if a == gone else a, b) for a, b in edges if (a, b) != (keep, gone)]


def _fusable(box: Box) -> bool:
    if box.kind == "other" and box.modules and box.modules[0].startswith("<"):
        return box.modules[0].strip("<>") in _FUSED_FUNCTIONS
    return box.kind == "other" and box.label.split()[0] in {
        "BN", "LRN", "dropout", "StochasticDepth", *(c.__name__ for c in _FUSED)}


def _absorb(boxes: dict[str, Box], edges: list, take: Callable[[Box, Box], bool],
            into: Callable[[Box, Box], None]) -> None:
    """Merge, until none is left, every box into the one before it when it is that box's only child,
    it has no other parent, and ``take(box, child)`` says so; ``into(box, child)`` updates the box."""
    changed = True
    while changed:
        changed = False
        parents, children = _links(edges)
        for key, box in boxes.items():
            kids = children.get(key, [])
            if box.kind in ("io", "merge") or len(kids) != 1 or len(parents.get(kids[0], [])) != 1:
                continue
            kid = boxes[kids[0]]
            if take(box, kid):
                into(box, kid)
                box.modules += kid.modules
                edges[:] = _merge(boxes, edges, key, kids[0])
                changed = True
                break


def _fuse(boxes: dict[str, Box], edges: list) -> None:
    def take(box: Box, kid: Box) -> bool:
        # two fusable layers in a row stay apart from what came before them
        return _fusable(kid) and not (box.kind == "other" and not box.detail and _fusable(box))

    def into(box: Box, kid: Box) -> None:
        box.detail.append(kid.label if kid.label != "relu" else "ReLU")
        box.shape = kid.shape
        box.layers += kid.layers

    _absorb(boxes, edges, take, into)
    for box in boxes.values():  # "BN · ReLU" on one line
        if box.detail and box.kind != "block":
            box.detail = [" · ".join(box.detail)]


def _roll(boxes: dict[str, Box], edges: list) -> None:
    def take(box: Box, kid: Box) -> bool:
        return ((kid.label, kid.detail, kid.shape, kid.kind, kid.layers)
                == (box.label, box.detail, box.shape, box.kind, box.layers))

    def into(box: Box, kid: Box) -> None:
        box.repeat += kid.repeat

    _absorb(boxes, edges, take, into)


def data_parallel(processes: int = 2, batch_size: int = 128):
    """Data parallelism as a figure (graphviz; SVG in a notebook): a global batch cut into one
    slice per process, each process's copy of the model, the all-reduce that averages their
    gradients, and the same optimiser step everywhere."""
    import graphviz

    g = graphviz.Digraph(graph_attr={"rankdir": "TB", "nodesep": "0.25", "ranksep": "0.3", "fontname": "Helvetica"},
                         node_attr={"shape": "box", "style": "rounded,filled", "fontname": "Helvetica",
                                    "fontsize": "11", "fillcolor": _COLORS["other"]})
    total = processes * batch_size
    g.node("batch", f"global batch: {total} items (the same shuffle in every process)", fillcolor=_COLORS["io"])
    g.node("reduce", f"all-reduce: every process gets the mean gradient of the {total} items",
           fillcolor=_COLORS["block"])
    for r in range(processes):
        g.node(f"x{r}", f"rank {r}: items {r * batch_size}-{(r + 1) * batch_size - 1}", fillcolor=_COLORS["io"])
        g.node(f"m{r}", f"GPU {r}: a whole copy of the model\nforward, loss, backward", fillcolor=_COLORS["conv"])
        g.node(f"s{r}", f"optimiser step on GPU {r}\n(the same update: the copies stay equal)", fillcolor=_COLORS["fc"])
        g.edge("batch", f"x{r}")
        g.edge(f"x{r}", f"m{r}")
        g.edge(f"m{r}", "reduce", label=" gradients", fontsize="10")
        g.edge("reduce", f"s{r}")
    return g


def ddp_timeline(layers: int = 8, buckets: int = 3, comm: float = 1.6):
    """A schematic timeline (not a measurement) of one DDP step in one process: the backward pass
    computes the gradients from the last layer to the first, and DDP groups them into ``buckets``
    (25 MB each by default, ``bucket_cap_mb``); as soon as every gradient of a bucket is ready, its
    all-reduce starts, while the backward pass goes on with the earlier layers. Only the last
    bucket's all-reduce is left after the backward pass; the optimiser step waits for it. Below,
    the same step without the overlap (all-reduce after the whole backward pass), for comparison.
    ``comm``: the time of one bucket's all-reduce, in units of one layer's backward."""
    import matplotlib.pyplot as plt

    per = layers / buckets  # layers a bucket holds
    fig, ax = plt.subplots(figsize=(9, 2.6))
    colors = plt.get_cmap("tab10")
    for k in range(layers):  # backward: layer L first
        for row in (3, 1):
            ax.barh(row, 1, left=k, color="#cfe0f3", edgecolor="#555555")
            ax.text(k + 0.5, row, f"∂{layers - k}", ha="center", va="center", fontsize=8)
    free = 0.0  # the link is busy with one all-reduce at a time
    for b in range(buckets):
        ready = (b + 1) * per  # the bucket's last gradient is computed
        start = max(ready, free)
        free = start + comm
        ax.barh(2.4, comm, left=start, color=colors(b), alpha=0.8, edgecolor="#555555")
        ax.text(start + comm / 2, 2.4, f"all-reduce {b + 1}", ha="center", va="center", fontsize=7)
    ax.axvline(free, color="black", ls=":", lw=1)
    later = float(layers)
    for b in range(buckets):
        ax.barh(0.4, comm, left=later, color=colors(b), alpha=0.8, edgecolor="#555555")
        ax.text(later + comm / 2, 0.4, f"all-reduce {b + 1}", ha="center", va="center", fontsize=7)
        later += comm
    ax.axvline(later, color="black", ls="--", lw=1)
    ax.set_yticks([3, 2.4, 1, 0.4], ["backward", "buckets' all-reduce", "backward", "all-reduce after"])
    ax.set_xlabel("time (a schematic: one unit = one layer's backward)")
    ax.set_title(f"One DDP step: gradients in {buckets} buckets, all-reduced during the backward pass (top) "
                 "or after it (bottom)", fontsize=9)
    ax.set_xlim(0, later + 0.5)
    fig.tight_layout()
    return fig
