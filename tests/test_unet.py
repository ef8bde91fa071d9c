"""U-Net, the Fashion-MNIST scenes, the Oxford-IIIT Pet loader, and dense training and scores."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from cnn_book import train
from cnn_book.data import DataError, ImageData, SegmentationData, fashion_mnist_scenes, load_oxford_pets
from cnn_book.inspect import count_parameters
from cnn_book.models import get_model


def _paper_unet_parameters() -> int:
    """Figure 1 of the paper, counted by hand: 3x3 convolutions with biases, 2x2 up-convolutions,
    a final 1x1 convolution to 2 classes; 1 input channel."""
    conv = lambda c_in, c_out, k=3: c_in * c_out * k * k + c_out  # noqa: E731
    w = [64, 128, 256, 512, 1024]
    n = conv(1, 64) + conv(64, 64)
    n += sum(conv(w[i - 1], w[i]) + conv(w[i], w[i]) for i in range(1, 5))  # levels 2-4 and the bottleneck
    n += sum(conv(w[i + 1], w[i], 2) + conv(2 * w[i], w[i]) + conv(w[i], w[i]) for i in range(4))  # expanding
    return n + conv(64, 2, 1)


def test_the_paper_s_unet_maps_572_to_388_with_its_parameter_count():
    with torch.device("meta"):
        m = get_model("unet")  # the paper's defaults: valid padding, 1 channel in, 2 classes out
        sizes = {}
        hooks = [mod.register_forward_hook(lambda _m, _i, o, n=n: sizes.__setitem__(n, tuple(o.shape[1:])))
                 for n, mod in m.named_modules() if n.count(".") == 1 or n == "bottleneck"]
        out = m(torch.zeros(1, 1, 572, 572))
    for h in hooks:
        h.remove()
    assert out.shape == (1, 2, 388, 388)
    assert count_parameters(m) == _paper_unet_parameters() == 31_030_658
    assert [sizes[f"encoder.{i}"] for i in range(4)] == [(64, 568, 568), (128, 280, 280), (256, 136, 136),
                                                         (512, 64, 64)]
    assert sizes["bottleneck"] == (1024, 28, 28)
    assert [sizes[f"decoder.{i}"] for i in (3, 2, 1, 0)] == [(512, 52, 52), (256, 100, 100), (128, 196, 196),
                                                             (64, 388, 388)]
    assert m.input_shape == (1, 572, 572) and m.output_size(572) == 388


def test_sizes_the_network_cannot_take_are_refused_with_the_nearest_that_fit():
    m = get_model("unet", base_width=4)
    with pytest.raises(ValueError, match=r"cannot take a 570x570 input.*Nearest sizes it takes: 556 \(output 372\) "
                                         r"and 572 \(output 388\)"):
        m(torch.zeros(1, 1, 570, 570))
    same = get_model("unet", base_width=4, padding="same")
    with pytest.raises(ValueError, match=r"a multiple of 16.*Nearest sizes it takes: 48 \(output 48\) and 64"):
        same(torch.zeros(1, 1, 60, 60))
    with pytest.raises(ValueError, match=r"expects input of shape \(N, 1, H, W\); got \(N, 3, 64, 64\)"):
        same(torch.zeros(1, 3, 64, 64))
    with pytest.raises(ValueError, match="padding must be"):
        get_model("unet", padding="full")


def test_same_padding_keeps_the_size_and_every_parameter_learns():
    m = get_model("unet", num_classes=11, in_channels=1, base_width=8, depth=3, padding="same")
    x = torch.randn(2, 1, 64, 48)
    out = m(x)
    assert out.shape == (2, 11, 64, 48)
    out.sum().backward()
    assert all(p.grad is not None for p in m.parameters())
    assert any(isinstance(mod, torch.nn.BatchNorm2d) for mod in m.modules())
    assert not any(isinstance(mod, torch.nn.BatchNorm2d) for mod in get_model("unet", base_width=4).modules())


def _fake_fashion(value_train=100, value_test=200, n=50):
    """Items that are solid squares, one value for the training split and another for the test split."""
    x = torch.zeros(n, 1, 28, 28, dtype=torch.uint8)
    x[:, :, 4:24, 4:24] = value_train
    y = torch.arange(n) % 10
    xt = x.clone()
    xt[:, :, 4:24, 4:24] = value_test
    return ImageData("fake", [f"c{i}" for i in range(10)], x, y, xt, y.clone(), (0.5,), (0.5,))


def test_scenes_are_deterministic_split_faithful_and_masks_follow_the_pixels():
    fake = _fake_fashion()
    a = fashion_mnist_scenes(fake, n_train=40, n_test=10, canvas=64, items=(2, 3), seed=1)
    b = fashion_mnist_scenes(fake, n_train=40, n_test=10, canvas=64, items=(2, 3), seed=1)
    assert isinstance(a, SegmentationData) and a.classes[0] == "background" and a.num_classes == 11
    assert torch.equal(a.train_x, b.train_x) and torch.equal(a.test_y, b.test_y)
    assert a.train_x.shape == (40, 1, 64, 64) and a.train_y.shape == (40, 64, 64)
    assert set(a.train_x.unique().tolist()) == {0, 100} and set(a.test_x.unique().tolist()) == {0, 200}
    assert torch.equal(a.train_y > 0, a.train_x[:, 0] > 0)  # every bright pixel and only those is labelled
    assert int(a.train_y.max()) <= 10
    # each scene holds 2 or 3 items: at least two 20x20 squares' worth unless they overlap
    assert all(int((m > 0).sum()) >= 400 for m in a.train_y)
    c = fashion_mnist_scenes(fake, n_train=40, n_test=10, seed=2)
    assert not torch.equal(a.train_x, c.train_x)


def test_real_scenes_use_real_classes(fmnist):
    scenes = fashion_mnist_scenes(fmnist, n_train=20, n_test=5)
    assert scenes.classes == ["background", *fmnist.classes]
    assert set(scenes.train_y.unique().tolist()) <= set(range(11)) and len(scenes.train_y.unique()) > 3


def test_segmentation_batches_flip_and_shift_image_and_mask_together():
    scenes = fashion_mnist_scenes(_fake_fashion(), n_train=64, n_test=8)
    with pytest.raises(ValueError, match="fed at its own size"):
        scenes.with_input(size=32)
    g = torch.Generator().manual_seed(0)
    x, y = next(scenes.batches("train", 64, shuffle=True, augment=True, generator=g))
    assert x.shape == (64, 1, 64, 64) and y.shape == (64, 64, 64) and y.dtype == torch.long
    bright = x[:, 0] * scenes.std[0] + scenes.mean[0] > 0.2  # undo the normalisation: the squares are 100/255
    assert torch.equal(bright, y > 0)
    plain = next(scenes.batches("train", 64))[1]
    assert not torch.equal(plain, y)  # something moved


def test_dice_loss_and_scores_on_known_cases():
    y = torch.tensor([[[0, 0], [1, 2]]])  # one 2x2 mask, three classes
    perfect = torch.nn.functional.one_hot(y, 3).permute(0, 3, 1, 2).float() * 50
    assert train.dice_loss(perfect, y).item() == pytest.approx(0, abs=1e-6)
    uniform = torch.zeros(1, 3, 2, 2)  # p = 1/3 everywhere
    dice = [(2 * g / 3 + 1) / (4 / 3 + g + 1) for g in (2, 1, 1)]  # per class, eps = 1
    assert train.dice_loss(uniform, y).item() == pytest.approx(1 - sum(dice) / 3, rel=1e-6)
    confusion = torch.tensor([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # class 2 absent: not in the mean
    s = train.SegmentationScores(["a", "b", "c"], confusion, 0.0)
    assert s.iou[:2].tolist() == pytest.approx([5 / 8, 3 / 6]) and math.isnan(s.iou[2].item())
    assert s.mean_iou == pytest.approx((5 / 8 + 3 / 6) / 2)
    assert s.pixel_accuracy == pytest.approx(8 / 11)
    assert s.class_accuracy[:2].tolist() == pytest.approx([5 / 6, 3 / 5])


def test_valid_unet_targets_are_the_central_crop():
    y = torch.arange(64).view(1, 8, 8)
    logits = torch.zeros(1, 3, 4, 4)
    assert torch.equal(train.dense_targets(logits, y), y[:, 2:6, 2:6])
    assert torch.equal(train.dense_targets(torch.zeros(2, 10), torch.arange(2)), torch.arange(2))


@pytest.mark.parametrize("padding", ["same", "valid"])
def test_fit_trains_a_unet_on_scenes_and_reports_mean_iou(fmnist, capsys, padding):
    scenes = fashion_mnist_scenes(fmnist, n_train=256, n_test=64, canvas=64 if padding == "same" else 60)
    torch.manual_seed(0)
    m = get_model("unet", num_classes=11, base_width=8, depth=2, padding=padding, batch_norm=True)
    h = train.fit(m, scenes, epochs=3, batch_size=32, lr=1e-2, loss="cross_entropy+dice", log_every=2)
    out = capsys.readouterr().out
    assert "test mIoU" in out and "test pixel accuracy" in out
    assert len(h["test_miou"]) == 3 and h.step_loss[-1] < h.step_loss[0]
    assert h["train_acc"][-1] > h["train_acc"][0]
    if padding == "same":  # two thirds of the pixels are background: the network finds them at least
        assert h["test_acc"][-1] > 0.6
    scores = train.segmentation_scores(m, scenes)
    assert scores.confusion.shape == (11, 11) and scores.mean_iou == pytest.approx(h["test_miou"][-1], abs=1e-9)
    out_side = m.output_size(scenes.input_shape[-1])
    assert int(scores.confusion.sum()) == 64 * out_side * out_side  # every scored pixel of the test set
    with pytest.raises(ValueError, match="loss='iou' does not fit a segmentation task, which takes 'cross_entropy'"):
        train.fit(m, scenes, epochs=1, loss="iou")


def test_oxford_pets_loader_on_made_files_in_its_format(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split, names in (("trainval", ["Abyssinian_1", "beagle_2", "Bengal_3"]), ("test", ["pug_4", "Persian_5"])):
        lines = []
        for i, name in enumerate(names):
            Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(base / "images" / f"{name}.jpg")
            trimap = np.full((40, 50), 2, dtype=np.uint8)  # background
            trimap[10:30, 15:35] = 3  # border
            trimap[12:28, 17:33] = 1  # pet
            Image.fromarray(trimap).save(base / "annotations" / "trimaps" / f"{name}.png")
            lines.append(f"{name} {i + 1} {1 + name[0].isupper()} 1")
        (base / "annotations" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    pets = load_oxford_pets(tmp_path, size=32, download=False)
    assert isinstance(pets, SegmentationData) and pets.classes == ["pet", "background", "border"]
    assert pets.train_x.shape == (3, 3, 32, 32) and pets.test_x.shape == (2, 3, 32, 32)
    assert pets.train_y.shape == (3, 32, 32) and set(pets.train_y.unique().tolist()) == {0, 1, 2}
    assert pets.train_y[0, 16, 16] == 0 and pets.train_y[0, 0, 0] == 1  # the pet in the middle, background around
    x, y = next(pets.batches("train", 2))
    assert x.shape == (2, 3, 32, 32) and y.dtype == torch.long
    with pytest.raises(DataError, match="could not be downloaded") as err:
        load_oxford_pets(tmp_path / "nothing", download=False)
    assert err.value.note == "Oxford-IIIT Pet is not on this machine and could not be downloaded (offline?)."


def _pets(tmp_path):
    base = tmp_path / "oxford-iiit-pet"
    (base / "images").mkdir(parents=True)
    (base / "annotations" / "trimaps").mkdir(parents=True)
    for split, name in (("trainval", "Abyssinian_1"), ("test", "pug_2")):
        Image.fromarray(np.zeros((40, 50, 3), dtype=np.uint8)).save(base / "images" / f"{name}.jpg")
        Image.fromarray(np.full((40, 50), 2, dtype=np.uint8)).save(base / "annotations" / "trimaps" / f"{name}.png")
        (base / "annotations" / f"{split}.txt").write_text(f"{name} 1 1 1\n")
    return base


@pytest.mark.parametrize("damage, message", [
    ("a trimap value of 255", r"the trimap .*Abyssinian_1.png holds values \[2, 255\], not only 1, 2 and 3"),
    ("a trimap value of 0", r"the trimap .*Abyssinian_1.png holds values \[0, 2\]"),
    ("a missing photo", r"images/Abyssinian_1.jpg or its trimap .* cannot be read \(FileNotFoundError"),
    ("a truncated photo", r"images/Abyssinian_1.jpg or its trimap .* cannot be read \(OSError"),
])
def test_oxford_pets_names_a_damaged_file(damage, message, tmp_path):
    base = _pets(tmp_path)
    photo, trimap = base / "images" / "Abyssinian_1.jpg", base / "annotations" / "trimaps" / "Abyssinian_1.png"
    if "trimap" in damage:
        t = np.full((40, 50), 2, dtype=np.uint8)
        t[0, 0] = 255 if "255" in damage else 0
        Image.fromarray(t).save(trimap)
    elif "missing" in damage:
        photo.unlink()
    else:
        photo.write_bytes(photo.read_bytes()[:200])
    with pytest.raises(DataError, match=message):
        load_oxford_pets(tmp_path, size=32, download=False)
