"""The decisive test: torchvision's state_dicts load into our models strictly and give the same logits."""

import hashlib
import urllib.request
from pathlib import Path
from urllib.error import URLError

import pytest
import torch
import torchvision

from cnn_book import models
from cnn_book.data import sample_photo
from cnn_book.inspect import count_parameters
from cnn_book.models import WeightsUnavailable, classify, get_model

# Parameter counts for 1000 classes, as torchvision documents them.
TORCHVISION_PARAMS = {
    "alexnet": 61_100_840,
    "vgg11": 132_863_336, "vgg11_bn": 132_868_840,
    "vgg13": 133_047_848, "vgg13_bn": 133_053_736,
    "vgg16": 138_357_544, "vgg16_bn": 138_365_992,
    "vgg19": 143_667_240, "vgg19_bn": 143_678_248,
    "googlenet": 13_004_888,  # with the auxiliary classifiers, as torchvision builds it without weights
    "resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
    "resnet101": 44_549_160, "resnet152": 60_192_808,
    "mobilenet_v2": 3_504_872,
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960,
}


def _reference(name):
    """A randomly initialised torchvision model (no download), batch-norm statistics made non-trivial."""
    torch.manual_seed(0)
    kwargs = {"init_weights": True} if name == "googlenet" else {}  # (silences a FutureWarning)
    ref = torchvision.models.get_model(name, weights=None, **kwargs)
    for m in ref.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    return ref.eval()


@pytest.mark.parametrize("name", list(TORCHVISION_PARAMS))
def test_torchvision_state_dict_loads_strictly_and_gives_the_same_logits(name):
    ref = _reference(name)
    with torch.device("meta"):  # ours is built without weights of its own: it takes the reference's
        ours = get_model(name).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())  # same keys, same order
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 64, 64)  # adaptive pooling makes 64x64 enough, and fast on a CPU
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == (2, 1000)
    assert torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()
    assert count_parameters(ours) == count_parameters(ref) == TORCHVISION_PARAMS[name]


def test_alexnet_at_224_and_the_paper_form():
    ref = _reference("alexnet")
    ours = get_model("alexnet").eval()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), rtol=1e-4, atol=1e-5)
        assert ours.features(x).shape == (1, 256, 6, 6)
    paper = get_model("alexnet", variant="paper").eval()
    assert count_parameters(paper) == 60_965_224  # the paper's "60 million parameters"
    convs = [m for m in paper.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [96, 256, 384, 384, 256]
    assert [c.groups for c in convs] == [1, 2, 1, 2, 2]  # the two-GPU split
    lrn = [m for m in paper.features if isinstance(m, torch.nn.LocalResponseNorm)]
    assert len(lrn) == 2 and lrn[0].alpha == pytest.approx(5e-4) and lrn[0].k == 2.0
    with torch.no_grad():
        assert paper.features(torch.randn(1, 3, 227, 227)).shape == (1, 256, 6, 6)


def test_table_1_columns_and_their_parameter_counts():
    from cnn_book.models.vgg import CONFIGS, PAPER_ONLY_CONFIGS, config_params

    for depth, key in {11: "A", 13: "B", 16: "D", 19: "E"}.items():  # the counter agrees with the models
        assert config_params(CONFIGS[key]) == TORCHVISION_PARAMS[f"vgg{depth}"]
    # Table 2 of the paper, in millions: A and A-LRN 133, B 133, C 134, D 138, E 144
    millions = {k: round(config_params(c) / 1e6) for k, c in {**CONFIGS, **PAPER_ONLY_CONFIGS}.items()}
    assert millions == {"A": 133, "A-LRN": 133, "B": 133, "C": 134, "D": 138, "E": 144}


def test_cifar_vgg16():
    m = get_model("vgg16_cifar")
    assert count_parameters(m) == 15_253_578
    assert m(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 3, 32, 32\); got \(N, 3, 64, 64\)"):
        m(torch.randn(1, 3, 64, 64))


def _put_in_torch_cache(tmp_path, monkeypatch, name):
    """What a first online call leaves behind: the weights file in torch's hub cache."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    w = torchvision.models.get_model_weights(name)["IMAGENET1K_V1"]
    ref = _reference(name)
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    path = folder / Path(w.url).name
    torch.save(ref.state_dict(), path)
    # torchvision's file is not here (no downloads in tests): the test's own file stands in for it, and
    # its SHA-256 for the published one that the file name carries
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    published = models._api._published_prefix
    monkeypatch.setattr(models._api, "_published_prefix",
                        lambda filename: digest[:8] if filename == path.name else published(filename))
    return ref


def test_published_weights_load_from_torch_cache(tmp_path, monkeypatch, capsys):
    ref = _put_in_torch_cache(tmp_path, monkeypatch, "alexnet")
    monkeypatch.setenv("CNN_BOOK_OFFLINE", "1")  # the cache is enough
    ours = get_model("alexnet", weights="IMAGENET1K_V1").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), rtol=1e-4, atol=1e-5)
    assert len(ours.categories) == 1000 and ours.categories[0] == "tench"
    assert ours.preprocess(torch.rand(3, 300, 400)).shape == (3, 224, 224)
    top = classify(ours, sample_photo(), top=3)
    assert len(top) == 3 and all(name in ours.categories for _, name in top)
    assert top[0][0] >= top[1][0] >= top[2][0] and sum(p for p, _ in top) <= 1 + 1e-6
    with pytest.raises(ValueError, match="built with weights"):
        classify(get_model("alexnet"), sample_photo())
    with pytest.raises(ValueError, match="for 1000 classes and 3 input channels"):
        get_model("alexnet", num_classes=10, weights="IMAGENET1K_V1")
    capsys.readouterr()
    tuned = get_model("alexnet", num_classes=10, weights="IMAGENET1K_V1", partial=True)  # fine-tuning
    said = capsys.readouterr().out  # what was loaded, and the two tensors of the new head that were not
    assert "Loaded 14 of the model's 16 tensors" in said
    assert "skipped (kept as initialised): classifier.6.weight, classifier.6.bias" in said
    assert torch.equal(tuned.features[0].weight, ref.features[0].weight)
    assert not torch.equal(tuned.classifier[6].bias[:10], ref.classifier[6].bias[:10])


def test_published_weights_offline_give_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("CNN_BOOK_OFFLINE", raising=False)  # first: a download is tried, and fails

    def offline(*args, **kwargs):
        raise URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(WeightsUnavailable, match="Could not download .*Offline, put the file vgg11-") as err:
        get_model("vgg11", weights="IMAGENET1K_V1")
    # the note a chapter prints: no address, no path, no error class
    assert err.value.note == ("torchvision's vgg11 ImageNet weights are not on this machine and it could not "
                              "download them (offline?).")
    assert not list(tmp_path.rglob("*.part")) and not list(tmp_path.rglob("vgg11-*"))  # nothing left behind
    monkeypatch.setenv("CNN_BOOK_OFFLINE", "1")
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("offline: no download"))
    with pytest.raises(WeightsUnavailable, match="CNN_BOOK_OFFLINE is set") as err:
        get_model("vgg11", weights="IMAGENET1K_V1")
    assert "/" not in err.value.note and "CNN_BOOK_OFFLINE" in err.value.note
    with pytest.raises(ValueError, match="choose from"):
        get_model("vgg11", weights="IMAGENET22K")
    with pytest.raises(ValueError, match="no weights for a model named 'lenet5'"):
        get_model("lenet5", weights="DEFAULT")


def test_googlenet_in_training_gives_torchvision_s_three_outputs():
    ref = _reference("googlenet")
    ours = get_model("googlenet")
    ours.load_state_dict(ref.state_dict(), strict=True)
    for m in (ours, ref):  # training mode (the auxiliary heads run), but deterministic layers
        m.train()
        for layer in m.modules():
            if isinstance(layer, (torch.nn.Dropout, torch.nn.BatchNorm2d)):
                layer.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a._fields == ("logits", "aux_logits2", "aux_logits1") == b._fields
    for u, v in zip(a, b, strict=True):
        assert u.shape == (2, 1000) and torch.allclose(u, v, rtol=1e-4, atol=1e-5)
    ours.eval()
    with torch.no_grad():
        assert isinstance(ours(x), torch.Tensor)  # at inference: the main logits only


def test_googlenet_options():
    without_aux = get_model("googlenet", aux_logits=False)
    assert count_parameters(without_aux) == 6_624_904 and without_aux.aux1 is None
    paper = get_model("googlenet", aux_logits=False, variant="paper")
    assert paper.inception3a.branch3[1].conv.kernel_size == (5, 5)  # the paper's 5x5
    assert without_aux.inception3a.branch3[1].conv.kernel_size == (3, 3)  # torchvision's 3x3
    assert count_parameters(paper) == 7_005_832
    small = get_model("googlenet", num_classes=10, in_channels=1, small_input=True, width_mult=0.25).eval()
    assert small(torch.randn(2, 1, 28, 28)).shape == (2, 10)
    assert small.inception5b(torch.randn(1, 208, 4, 4)).shape == (1, 256, 4, 4)  # 1024 x 0.25
    with pytest.raises(ValueError, match="variant must be"):
        get_model("googlenet", variant="v3")


def test_resnet_paper_stride_and_small_input():
    v15, paper = get_model("resnet50"), get_model("resnet50", variant="paper")
    assert count_parameters(v15) == count_parameters(paper)
    assert (v15.layer2[0].conv1.stride, v15.layer2[0].conv2.stride) == ((1, 1), (2, 2))  # torchvision v1.5
    assert (paper.layer2[0].conv1.stride, paper.layer2[0].conv2.stride) == ((2, 2), (1, 1))  # the paper
    paper.load_state_dict(v15.state_dict(), strict=True)  # same keys and shapes, different computation
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert paper.eval()(x).shape == v15.eval()(x).shape and not torch.allclose(paper(x), v15(x))
    small = get_model("resnet18", num_classes=10, in_channels=1, small_input=True).eval()
    assert small.conv1.kernel_size == (3, 3) and isinstance(small.maxpool, torch.nn.Identity)
    with torch.no_grad():
        assert small.features(torch.randn(1, 1, 28, 28)).shape == (1, 512, 4, 4)  # 28 -> 28 -> 14 -> 7 -> 4
    assert [k for k in small.state_dict() if "features" in k or "classifier" in k] == []  # views, not copies


def test_googlenet_published_weights_switch_on_the_input_transform(tmp_path, monkeypatch):
    ref = _put_in_torch_cache(tmp_path, monkeypatch, "googlenet")  # the file holds the auxiliary heads too
    monkeypatch.setenv("CNN_BOOK_OFFLINE", "1")
    ours = get_model("googlenet", weights="IMAGENET1K_V1").eval()
    assert ours.transform_input  # the weights expect inputs in [-1, 1], as torchvision's builder knows
    ref.transform_input = True
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), rtol=1e-4, atol=1e-5)
        lean = get_model("googlenet", weights="IMAGENET1K_V1", aux_logits=False).eval()  # heads dropped
        assert lean.aux1 is None and torch.allclose(lean(x), ref(x), rtol=1e-4, atol=1e-5)


def test_mobilenet_v1_reproduces_the_paper_s_tables_6_and_7():
    from cnn_book.inspect import flops_by_module

    def measure(**kwargs):
        m = get_model("mobilenet_v1", **kwargs).eval()
        macs = flops_by_module(m, torch.zeros(1, *m.input_shape))[""] / 2  # 1 multiply-add = 2 FLOPs
        return round(count_parameters(m) / 1e6, 1), round(macs / 1e6)

    # Table 6 (width multiplier): millions of parameters and of mult-adds at 224x224
    assert measure(alpha=1.0) == (4.2, 569)
    assert measure(alpha=0.75) == (2.6, 325)
    assert measure(alpha=0.5) == (1.3, 149)
    assert measure(alpha=0.25) == (0.5, 41)
    # Table 7 (resolution multiplier), 1.0 MobileNet: 192, 160, 128 pixels
    assert [measure(rho=r / 224) for r in (192, 160, 128)] == [(4.2, 418), (4.2, 291), (4.2, 186)]
    m = get_model("mobilenet_v1", rho=160 / 224)
    assert m.input_shape == (3, 160, 160) and m.name == "1.0-MobileNet-160"


def test_efficientnet_pieces():
    from cnn_book.models.blocks import SqueezeExcitation, make_divisible
    from cnn_book.models.efficientnet import VARIANTS, StochasticDepth, compound_scaling

    assert [make_divisible(v) for v in (32 * 1.1, 16 * 1.4, 40 * 1.8, 3.0)] == [32, 24, 72, 8]
    d, w, r = compound_scaling(1)
    assert (d, w, r) == (1.2, 1.1, 1.15) and abs(d * w**2 * r**2 - 1.92) < 0.01  # "about 2" FLOPs per step
    assert VARIANTS["b1"][:3] == (1.0, 1.1, 240) and VARIANTS["b7"][:3] == (2.0, 3.1, 600)
    se = SqueezeExcitation(16, 4)
    x = torch.randn(2, 16, 5, 5)
    with torch.no_grad():
        y = se(x)
    ratio = y / x  # one weight in (0, 1) per sample and channel
    assert y.shape == x.shape and torch.allclose(ratio, ratio[..., :1, :1].expand_as(ratio), atol=1e-5)
    assert ((ratio > 0) & (ratio < 1)).all()
    sd = StochasticDepth(0.5)
    ones = torch.ones(1000, 3, 2, 2)
    dropped = sd(ones)  # training: whole samples dropped, the rest scaled by 2
    assert set(dropped.unique().tolist()) == {0.0, 2.0} and 350 < (dropped[:, 0, 0, 0] == 0).sum() < 650
    assert torch.equal(sd.eval()(ones), ones)
    b0 = get_model("efficientnet_b0")
    probs = [m.stochastic_depth.p for m in b0.modules() if hasattr(m, "stochastic_depth")]
    assert len(probs) == 16 and probs[0] == 0 and probs == sorted(probs) and probs[-1] == 0.2 * 15 / 16


def test_mobilenet_small_input_keeps_a_grid_for_28x28_images():
    v1 = get_model("mobilenet_v1", num_classes=10, in_channels=1, small_input=True).eval()
    v2 = get_model("mobilenet_v2", num_classes=10, in_channels=1, small_input=True).eval()
    x = torch.zeros(1, 1, 28, 28)
    with torch.no_grad():
        assert v1.features(x).shape == (1, 1024, 2, 2)  # 28 -> 28 -> 14 -> 7 -> 4 -> 2
        assert v2.features(x).shape == (1, 1280, 4, 4)  # 28 -> 28 -> 28 -> 14 -> 7 -> 4
    assert v1.input_shape == v2.input_shape == (1, 28, 28) and "small input" in v1.name
    # the same weights as the 224x224 networks: only strides change
    assert count_parameters(v2) == count_parameters(get_model("mobilenet_v2", num_classes=10, in_channels=1))


@pytest.mark.parametrize("name", ["mobilenet_v2", "efficientnet_b0"])
def test_mobilenet_and_efficientnet_published_weights_load_from_torch_cache(tmp_path, monkeypatch, name):
    ref = _put_in_torch_cache(tmp_path, monkeypatch, name)
    monkeypatch.setenv("CNN_BOOK_OFFLINE", "1")
    ours = get_model(name, weights="IMAGENET1K_V1").eval()
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref.eval()(x), rtol=1e-4, atol=1e-5)
    assert len(ours.categories) == 1000
