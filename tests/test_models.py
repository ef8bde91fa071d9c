import typing

import pytest
import torch

from cnn_book.inspect import count_parameters
from cnn_book.models import get_model, get_model_builder, list_models
from cnn_book.models.lenet import LENET5_C3_TABLE, ConnectionTableConv

# Parameter counts for 10 classes on the default input, worked out by hand in the chapters.
EXPECTED_PARAMS = {
    ("lenet5", ()): 61_706,  # 156 + 2,416 + 48,120 + 10,164 + 850
    ("lenet5", (("variant", "1998"),)): 60_000,  # the paper: "60,000 trainable free parameters"
    ("simple_cnn", ()): 421_642,  # 320 + 18,496 + 401,536 + 1,290
    # He et al. (2016), Table 6: 0.27 M, 0.46 M, 0.66 M, 0.85 M and 1.7 M; option-A shortcuts have none
    ("resnet_cifar", (("depth", 20),)): 269_722,
    ("resnet_cifar", (("depth", 20), ("plain", True))): 269_722,
    ("resnet_cifar", (("depth", 32),)): 464_154,
    ("resnet_cifar", (("depth", 44),)): 658_586,
    ("resnet_cifar", (("depth", 56),)): 853_018,
    ("resnet_cifar", (("depth", 110),)): 1_727_962,
}


def _small_input_shape(model):
    """The model's input shape, at 64x64 for the ImageNet models that accept any size from 63 up
    (the smallest size it takes from 64 up for a segmentation model)."""
    c, h, w = model.input_shape
    if getattr(model, "task", "") == "detection" or getattr(model, "fixed_size", False):
        # a fully connected head, or a ViT's position embeddings: its own size only
        return (c, h, w)
    if getattr(model, "task", "") == "segmentation":
        return (c, model.valid_size_near(64), model.valid_size_near(64))
    return (c, 64, 64) if h > 64 else (c, h, w)


def _output_shape(model, n, classes, h, w):
    """(n, classes) for a classifier; (n, classes, H_out, W_out) for a model that scores every pixel."""
    if getattr(model, "task", "") == "segmentation":
        return (n, classes, model.output_size(h), model.output_size(w))
    if getattr(model, "task", "") == "detection":  # YOLO: (N, S, S, 5B + C)
        return (n, model.grid, model.grid, 5 * model.num_boxes + classes)
    return (n, classes)


def _on_meta(name: str, **options):
    """The model built on the meta device: its layers and shapes, no weights computed (fast)."""
    with torch.device("meta"):
        return get_model(name, **options)


def _reads_tokens(name: str) -> bool:
    """From the class the builder returns, without building it (collection stays quick)."""
    return getattr(typing.get_type_hints(get_model_builder(name))["return"], "input_dtype", None) == torch.long


IMAGE_MODELS = [n for n in list_models() if not _reads_tokens(n)]
TOKEN_MODELS = sorted(set(list_models()) - set(IMAGE_MODELS))  # gpt2, bert, ...: tests/test_language_models.py


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_model_takes_num_classes_and_in_channels(name):
    """On the meta device: shapes and the autograd graph, with nothing computed (a full-size VGG or
    ViT-L would take seconds to initialise and run, and the shapes are what is tested)."""
    if getattr(typing.get_type_hints(get_model_builder(name))["return"], "task", "") == "generative":
        pytest.skip("a generative model has no classes: tests/test_vae.py tests its channels and shapes")
    model = _on_meta(name, num_classes=7, in_channels=3)
    c, h, w = _small_input_shape(model)
    assert c == 3
    out = model(torch.randn(2, c, h, w, device="meta"))
    outputs = out if isinstance(out, tuple) else (out,)  # GoogLeNet in training: (logits, aux2, aux1)
    assert all(o.shape == _output_shape(model, 2, 7, h, w) for o in outputs)
    assert hasattr(model, "features") and hasattr(model, "classifier")
    sum(o.sum() for o in outputs).backward()  # gradients reach every parameter
    assert all(p.grad is not None for p in model.parameters())
    model.eval()
    with torch.no_grad():  # at inference: one tensor
        assert model(torch.randn(2, c, h, w, device="meta")).shape == _output_shape(model, 2, 7, h, w)


@pytest.mark.parametrize("name", IMAGE_MODELS)
def test_every_model_rejects_a_wrong_input_with_the_expected_shape(name):
    model = _on_meta(name)  # the shape is checked before anything is computed
    if getattr(model, "task", "") == "segmentation":
        pytest.skip("a segmentation model's size rule and message are tested in test_unet.py")
    c, h, w = _small_input_shape(model)
    expected = r"expects input of shape \(N, " + str(c) + r", \d+, \d+\)( or larger)?"
    with pytest.raises(ValueError, match=expected + rf"; got \(N, {c + 1}, {h}, {w}\)"):
        model(torch.randn(1, c + 1, h, w, device="meta"))
    tiny = getattr(model, "min_size", 9) - 1  # one pixel too small
    with pytest.raises(ValueError, match=expected + rf"; got \(N, {c}, {tiny}, {tiny}\)"):
        model(torch.randn(1, c, tiny, tiny, device="meta"))
    with pytest.raises(ValueError, match="add one with x.unsqueeze"):
        model(torch.randn(c, h, w, device="meta"))


@pytest.mark.parametrize(("name", "kwargs"), list(EXPECTED_PARAMS))
def test_parameter_counts(name, kwargs):
    model = get_model(name, **dict(kwargs))
    assert count_parameters(model, trainable_only=True) == EXPECTED_PARAMS[(name, kwargs)]


def test_lenet5_1998_layers_match_the_paper():
    m = get_model("lenet5", variant="1998")
    f, c = m.features, m.classifier
    per_layer = {n: count_parameters(x) for n, x in [("C1", f.c1), ("S2", f.s2), ("C3", f.c3), ("S4", f.s4),
                                                     ("C5", f.c5), ("F6", c.f6), ("output", c.output)]}
    assert per_layer == {"C1": 156, "S2": 12, "C3": 1516, "S4": 32, "C5": 48120, "F6": 10164, "output": 0}
    assert m.classifier.output.codes.shape == (10, 84)
    assert set(m.classifier.output.codes.unique().tolist()) == {-1.0, 1.0}
    # same codes on every build: they are part of the model, not of the run
    assert torch.equal(get_model("lenet5", variant="1998").classifier.output.codes, m.classifier.output.codes)


def test_c3_map_j_sees_only_the_s2_maps_of_table_row_j():
    c3 = ConnectionTableConv(LENET5_C3_TABLE, 5)
    x = torch.randn(1, 6, 14, 14, requires_grad=True)
    out = c3(x)
    assert out.shape == (1, 16, 10, 10)
    for j, inputs in enumerate(LENET5_C3_TABLE):
        (grad,) = torch.autograd.grad(out[0, j].sum(), x, retain_graph=True)
        seen = {i for i in range(6) if grad[0, i].abs().sum() > 0}
        assert seen == set(inputs), f"C3 map {j}"


def test_modern_lenet_options():
    m = get_model("lenet5", activation="sigmoid", pool="avg")
    assert isinstance(m.features[1], torch.nn.Sigmoid) and isinstance(m.features[2], torch.nn.AvgPool2d)
    assert count_parameters(m) == 61_706
    assert get_model("lenet5", input_size=32, in_channels=3)(torch.randn(1, 3, 32, 32)).shape == (1, 10)
    with pytest.raises(ValueError, match="variant must be"):
        get_model("lenet5", variant="1989")
    with pytest.raises(ValueError, match="activation must be one of"):
        get_model("lenet5", activation="swish")


def _recipe_models():
    from cnn_book.recipes import RECIPES

    return sorted({(r.model, tuple(sorted((k, v) for k, v in r.options.items() if k not in ("weights", "partial"))),
                    r.input_shape) for row in RECIPES.values() for r in row.values()}, key=str)


def _meta_run(name: str, options: dict, shape: tuple[int, ...]) -> None:
    model = _on_meta(name, **options).eval()
    x = torch.zeros(2, *shape, device="meta", dtype=getattr(model, "input_dtype", torch.float32))
    model(x)


@pytest.mark.parametrize("name", list_models())
def test_every_model_runs_on_its_own_input_shape(name):
    """What get_model once did on every build, as a test: the model runs on its ``input_shape`` (on
    the meta device: shapes are checked, nothing is computed)."""
    model = _on_meta(name)
    _meta_run(name, {}, model.input_shape)


@pytest.mark.parametrize("name, options, shape", _recipe_models(), ids=lambda v: str(v)[:40])
def test_every_recipe_s_model_runs_on_its_input(name, options, shape):
    _meta_run(name, dict(options), shape)


def test_unknown_model_name_suggests_the_closest():
    with pytest.raises(ValueError, match="Did you mean 'lenet5'"):
        get_model("lenet")


def test_residual_block_adds_the_shortcut_and_the_plain_block_does_not():
    from cnn_book.models.resnet import BasicBlock, Bottleneck, PadShortcut

    block = BasicBlock(16, 16).eval()
    torch.nn.init.zeros_(block.bn2.weight)  # F(x) = 0: the block is the identity on x >= 0
    x = torch.rand(1, 16, 8, 8)
    plain = BasicBlock(16, 16, plain=True).eval()  # the same layers without the shortcut: relu(0) everywhere
    plain.load_state_dict(block.state_dict())
    with torch.no_grad():
        assert torch.equal(block(x), x)
        assert torch.equal(plain(x), torch.zeros_like(x))
    plains = get_model("resnet50", plain=True)
    assert all(b.plain for b in plains.modules() if isinstance(b, Bottleneck)) and not isinstance(
        plains.layer1[0], BasicBlock)  # siblings, as in torchvision: neither is the other's subclass
    pad = PadShortcut(32, stride=2)
    y = pad(x)
    assert y.shape == (1, 32, 4, 4) and torch.equal(y[:, :16], x[:, :, ::2, ::2]) and not y[:, 16:].any()
    assert [n for n, m in get_model("resnet_cifar", depth=20).named_modules() if isinstance(m, PadShortcut)] == [
        "layer2.0.downsample", "layer3.0.downsample"]
    with pytest.raises(ValueError, match="6n \\+ 2 layers"):
        get_model("resnet_cifar", depth=18)


@pytest.mark.parametrize("name", TOKEN_MODELS)
def test_every_language_model_reads_token_ids_and_refuses_pixels(name):
    model = get_model(name).eval()
    (t,) = model.input_shape
    with torch.no_grad():
        out = model(torch.randint(1, 100, (2, min(t, 16))))
    assert out.shape[0] == 2 and out.is_floating_point()
    if name != "bag_of_words":  # an EmbeddingBag refuses floats itself, with torch's message
        with pytest.raises(ValueError, match=r"takes token ids of shape \(N, T\), integers"):
            model(torch.randn(2, 16))
