"""plot.diagram: drawn from the module, every layer in a box, branches and skips where the model has them."""

import shutil

import pytest
import torch
from torch import nn

import cnn_book
from cnn_book import plot
from cnn_book.diagram import describe

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="the graphviz program (apt install graphviz)")


def _zeros(model, shape):
    """One input of ``shape`` on the model's device: pixels, or token ids for a language model."""
    device = next(iter(model.parameters()), torch.empty(0)).device
    return torch.zeros(1, *shape, dtype=getattr(model, "input_dtype", torch.float32), device=device)


def _called_leaves(model, shape):
    """The dotted names of the leaf modules a forward pass calls."""
    called, hooks = set(), []
    for name, m in model.named_modules():
        if not list(m.children()):
            hooks.append(m.register_forward_hook(lambda *_, n=name: called.add(n)))
    with torch.no_grad():
        model.eval()(_zeros(model, shape))
    for h in hooks:
        h.remove()
    return called


def _modules(d):
    return {n for b in d.boxes.values() for n in b.modules if not n.startswith("<")}


def _parents(d, key):
    return [a for a, b in d.edges if b == key]


@pytest.mark.parametrize("name", cnn_book.list_models())
def test_every_registered_model_is_drawn_with_every_layer_it_calls(name):
    with torch.device("meta"):  # the layers and shapes, no weights: traced without computing anything
        model = cnn_book.get_model(name)
    shape = model.input_shape
    if name.startswith("efficientnet_b") and name != "efficientnet_b0":
        shape = (3, 64, 64)  # the same layers at a small size: B1-B7 at 240-600 px only cost time
    d = plot.diagram(model, shape)
    assert _modules(d) == _called_leaves(model, shape)
    # one input, a box for each tensor the model returns (a VAE: logits, mu, logvar, z), and every box
    # is on a path from one to the other
    ios = [k for k, b in d.boxes.items() if b.kind == "io"]
    with torch.no_grad():
        out = model.eval()(_zeros(model, shape))
    assert len(ios) == 1 + (len(out) if isinstance(out, tuple) else 1)
    assert {k for a, b in d.edges for k in (a, b)} == set(d.boxes)


def test_lenet5_boxes_are_its_layers_in_order():
    d = plot.diagram(cnn_book.get_model("lenet5"))
    labels = [(b.label, b.detail, b.shape[1:]) for b in d.boxes.values()]
    assert labels == [
        ("input 1×28×28", [], (1, 28, 28)),
        ("5×5 conv, 6", ["ReLU"], (6, 28, 28)),
        ("max pool 2×2, /2", [], (6, 14, 14)),
        ("5×5 conv, 16", ["ReLU"], (16, 10, 10)),
        ("max pool 2×2, /2", [], (16, 5, 5)),
        ("flatten", [], (400,)),
        ("FC, 120", ["ReLU"], (120,)),
        ("FC, 84", ["ReLU"], (84,)),
        ("FC, 10", [], (10,)),
        ("output 10", [], (10,)),
    ]
    # a chain: every box but the last has exactly one child
    assert len(d.edges) == len(d.boxes) - 1


def test_unfused_diagram_has_one_box_per_call():
    model = cnn_book.get_model("lenet5")
    d = plot.diagram(model, fuse=False, roll=False)
    leaves = [b for b in d.boxes.values() if b.kind not in ("io",) and not b.modules[0].startswith("<")]
    assert [b.modules for b in leaves] == [[n] for n, m in model.named_modules() if not list(m.children())]


def test_residual_blocks_add_their_input_back():
    resnet = cnn_book.get_model("resnet18")
    for block, shape, convs in ((resnet.layer1[0], (64, 56, 56), 2), (resnet.layer2[0], (64, 56, 56), 3),
                                (cnn_book.get_model("resnet50").layer1[0], (64, 56, 56), 4)):
        d = plot.diagram(block, shape)
        add = [k for k, b in d.boxes.items() if b.label == "+"]
        assert len(add) == 1
        source = next(k for k, b in d.boxes.items() if b.label.startswith("input"))
        parents = _parents(d, add[0])
        assert len(parents) == 2
        # the basic block's identity skip is an arrow from the input itself; the others pass a 1x1 conv
        assert (source in parents) == (convs == 2)
        assert sum(b.kind == "conv" for b in d.boxes.values()) == convs


def test_inception_module_concatenates_four_branches():
    block = cnn_book.get_model("googlenet").inception3a
    d = plot.diagram(block, (192, 28, 28))
    cat = next(k for k, b in d.boxes.items() if b.label == "concat")
    assert len(_parents(d, cat)) == 4
    assert d.boxes[cat].shape == (1, 256, 28, 28)
    source = next(k for k, b in d.boxes.items() if b.label.startswith("input"))
    assert len([b for a, b in d.edges if a == source]) == 4


def test_mbconv_scales_by_squeeze_and_excitation():
    block = cnn_book.get_model("efficientnet_b0").features[2][1]
    d = plot.diagram(block, (24, 56, 56))
    labels = [b.label for b in d.boxes.values()]
    assert "×" in labels and "+" in labels and "3×3 depthwise" in labels and "global avg pool" in labels


def test_unet_at_depth_one_has_four_skips():
    unet = cnn_book.get_model("unet")
    d = plot.diagram(unet, depth=1)
    ups = [k for k, b in d.boxes.items() if b.label == "Up"]
    assert len(ups) == 4
    # each Up takes the level below and the encoder's map at its own level
    for k in ups:
        assert sorted(d.boxes[p].label for p in _parents(d, k))[0] == "DoubleConv"
        assert len(_parents(d, k)) == 2


def test_rolled_boxes_count_their_repeats():
    d = plot.diagram(cnn_book.get_model("vgg16"))
    convs = [(b.label, b.repeat) for b in d.boxes.values() if b.kind == "conv"]
    # VGG-16's 13 convolutions (configuration D): the first of each stage widens the channels, so it
    # is another layer than the ones after it, though its label is the same (the fifth stage's first
    # reads 512 channels like the others: its three roll into one box)
    assert [r for _, r in convs] == [1, 1, 1, 1, 1, 2, 1, 2, 3] and sum(r for _, r in convs) == 13
    assert convs[2:4] == [("3×3 conv, 128", 1), ("3×3 conv, 128", 1)]


def test_layers_with_the_same_label_roll_only_when_they_are_the_same():
    """AlexNet's conv4 (384 -> 256, 884,992 parameters) and conv5 (256 -> 256, 590,080) are both
    "3×3 conv, 256": two boxes, each with its own layer, not one box "×2"."""
    d = plot.diagram(cnn_book.get_model("alexnet"))
    convs = [b for b in d.boxes.values() if b.kind == "conv"]
    assert [b.label for b in convs][-2:] == ["3×3 conv, 256", "3×3 conv, 256"]
    assert all(b.repeat == 1 for b in convs) and len(convs) == 5
    assert [b.layers[0][2] for b in convs][-2:] == [884_992, 590_080]


def test_describe_speaks_like_a_textbook():
    assert describe(nn.Conv2d(3, 64, 7, stride=2, padding=3))[0] == "7×7 conv, 64, /2"
    assert describe(nn.Conv2d(32, 32, 3, groups=32))[0] == "3×3 depthwise"
    assert describe(nn.MaxPool2d(3, 2))[0] == "max pool 3×3, /2"
    assert describe(nn.AdaptiveAvgPool2d(1))[0] == "global avg pool"
    assert describe(nn.ConvTranspose2d(128, 64, 2, 2))[0] == "2×2 up-conv, 64"


def test_a_model_without_an_input_shape_asks_for_one():
    with pytest.raises(ValueError, match="input_shape"):
        plot.diagram(nn.Sequential(nn.Conv2d(1, 2, 3)))


@needs_dot
def test_diagram_renders_as_svg_with_its_shapes():
    d = plot.diagram(cnn_book.get_model("lenet5"), title="LeNet-5")
    svg = d._repr_mimebundle_()["image/svg+xml"]
    assert svg.lstrip().startswith("<?xml") and "5×5 conv, 6" in svg and "16×5×5" in svg


def test_a_stage_drawn_as_one_box_says_what_it_holds():
    d = plot.diagram(cnn_book.get_model("efficientnet_b0"), depth=2)
    labels = [b.label for b in d.boxes.values()]
    assert "features.1: 1 × MBConv" in labels and "features.6: 4 × MBConv" in labels
    blocks = [b for b in plot.diagram(cnn_book.get_model("efficientnet_b0"), depth=3).boxes.values()
              if b.label == "MBConv"]
    assert sum(b.repeat for b in blocks) == 16  # B0's 16 blocks, identical neighbours drawn as one


def test_without_the_graphviz_program_the_diagram_says_what_to_install(monkeypatch):
    import graphviz

    def missing(*args, **kwargs):
        raise graphviz.ExecutableNotFound(("dot",))

    monkeypatch.setattr(graphviz.Digraph, "pipe", missing)
    bundle = plot.diagram(cnn_book.get_model("lenet5"), title="LeNet-5")._repr_mimebundle_()
    assert "image/svg+xml" not in bundle
    assert "graphviz program" in bundle["text/plain"] and "apt-get install graphviz" in bundle["text/plain"]
    assert "LeNet-5, 10 boxes" in bundle["text/plain"]


def test_the_ddp_timeline_overlaps_the_all_reduce_with_the_backward_pass():
    import matplotlib

    matplotlib.use("Agg")
    from cnn_book.diagram import ddp_timeline

    fig = ddp_timeline(layers=8, buckets=3, comm=1.6)
    ax = fig.axes[0]
    assert len(ax.patches) == 2 * 8 + 2 * 3  # two backward passes, two sets of bucket all-reduces
    ends = sorted(line.get_xdata()[0] for line in ax.lines)  # the step can end: with overlap, without
    assert ends == pytest.approx([8 + 1.6, 8 + 3 * 1.6])  # only the last bucket waits after the backward
