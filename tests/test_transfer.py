"""Transfer learning: the ImageNet view of the data, balanced subsets, a new head, freezing (batch
norm statistics included), per-layer learning rates, pooled features, the linear probe, and
Grad-CAM checked against captum's."""

import pytest
import torch
from torch import nn
from torchvision.ops.misc import FrozenBatchNorm2d

import cnn_book
from cnn_book import train, transfer
from cnn_book.data import ImageData
from cnn_book.models import place_offline_weights


def _data(n=60, classes=3, channels=1, side=28):
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, channels, side, side), dtype=torch.uint8, generator=g)
    y = torch.arange(n) % classes
    return ImageData("toy", [f"c{i}" for i in range(classes)], x, y, x[:12].clone(), y[:12].clone())


def test_the_imagenet_view_repeats_grey_and_uses_imagenet_statistics():
    v = transfer.imagenet_view(_data(), size=40)
    assert v.input_shape == (3, 40, 40)
    x = v.images("train", 0)
    assert torch.allclose(x[0, 0] * 0.229 + 0.485, x[0, 1] * 0.224 + 0.456, atol=1e-5)  # the same grey
    with pytest.raises(ValueError, match="grey or RGB"):
        transfer.imagenet_view(_data(channels=2))


def test_per_class_is_balanced_nested_across_sizes_and_keeps_the_test_set():
    d = _data(n=90)
    small, big = transfer.per_class(d, 5), transfer.per_class(d, 20)
    assert torch.bincount(small.train_y).tolist() == [5, 5, 5]
    assert torch.bincount(big.train_y).tolist() == [20, 20, 20]
    as_rows = lambda e: {tuple(r.flatten().tolist()) for r in e.train_x}  # noqa: E731
    assert as_rows(small) <= as_rows(big)  # 5 per class are among the 20 per class
    assert small.test_x is d.test_x
    with pytest.raises(ValueError, match="fewer than 31"):
        transfer.per_class(d, 31)


def test_repeat_gives_every_run_the_same_number_of_training_images():
    d = transfer.per_class(_data(n=90), 5, repeat_to=100)
    assert len(d.train_x) == 100 and torch.bincount(d.train_y).tolist() == [34, 33, 33]


def test_freeze_stops_gradients_and_batch_norm_statistics():
    net = cnn_book.get_model("mobilenet_v2", num_classes=10, width_mult=0.25)
    in_features = sum(p.numel() for p in net.features.parameters())
    assert transfer.freeze(net, "features") == in_features
    assert transfer.trainable(net) == 1280 * 10 + 10
    assert not any(isinstance(m, nn.BatchNorm2d) for m in net.features.modules())
    before = {k: v.clone() for k, v in net.features.state_dict().items()}
    net.train()
    net(torch.randn(4, 3, 64, 64) * 5 + 3)  # data far from ImageNet's statistics, in train mode
    assert all(torch.equal(before[k], v) for k, v in net.features.state_dict().items())
    with pytest.raises(ValueError, match="nothing to train"):
        transfer.freeze(net)
        train.param_groups(net, 1e-3)


def test_lr_scale_gives_the_pretrained_layers_a_smaller_rate():
    net = cnn_book.get_model("mobilenet_v2", num_classes=10, width_mult=0.25)
    groups = train.param_groups(net, 1e-2, {"features": 0.1})
    assert sorted(g["lr"] for g in groups) == pytest.approx([1e-3, 1e-2])
    assert sum(len(g["params"]) for g in groups) == len(list(net.parameters()))
    with pytest.raises(ValueError, match="'feature'.*features, avgpool, classifier"):
        train.param_groups(net, 1e-2, {"feature": 0.1})
    with pytest.raises(ValueError, match="positive"):
        train.param_groups(net, 1e-2, {"features": 0})


def test_fit_trains_only_what_is_not_frozen():
    d = transfer.imagenet_view(_data(n=32, classes=10), size=32)
    net = cnn_book.get_model("mobilenet_v2", num_classes=10, width_mult=0.25)
    transfer.freeze(net, "features")
    feats = {k: v.clone() for k, v in net.features.state_dict().items()}
    head = net.classifier[-1].weight.clone()
    train.fit(net, d, epochs=1, batch_size=16, progress=False)
    assert all(torch.equal(feats[k], v) for k, v in net.features.state_dict().items())
    assert not torch.equal(head, net.classifier[-1].weight)


def test_new_head_replaces_the_last_linear_layer():
    net = cnn_book.get_model("mobilenet_v2", width_mult=0.25)
    head = transfer.new_head(net, 7)
    assert net.classifier[-1] is head and head.out_features == 7
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 7)
    with pytest.raises(ValueError, match="no classifier"):
        transfer.new_head(nn.Conv2d(1, 1, 1), 3)


def test_features_and_the_linear_probe_separate_separable_classes():
    d = transfer.imagenet_view(_data(n=40, classes=2), size=32)
    net = cnn_book.get_model("mobilenet_v2", num_classes=2, width_mult=0.25)
    f, y = transfer.features(net, d, "train", batch_size=16)
    assert f.shape == (40, 1280) and torch.equal(y, d.train_y)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(200, 5, generator=g)
    labels = (x[:, 0] > 0).long()
    _, acc = transfer.linear_probe((x[:100], labels[:100]), (x[100:], labels[100:]), 2)
    assert acc > 0.95


def test_grad_cam_equals_captum_s_layer_grad_cam():
    captum = pytest.importorskip("captum.attr")
    torch.manual_seed(0)
    net = cnn_book.get_model("mobilenet_v2", width_mult=0.5).eval()
    x = torch.randn(1, 3, 96, 96)
    cam, target = transfer.grad_cam(net, x, net.features[-1])
    ref = captum.LayerGradCam(net, net.features[-1]).attribute(x, target=target, relu_attributions=True)
    ref = ref[0, 0].detach()
    assert target == int(net(x).argmax(1))
    assert torch.allclose(cam, ref / ref.max(), atol=1e-5)


def test_grad_cam_finds_each_class_on_its_own_side_of_a_real_photo_pair():
    """Chelsea the cat beside a cup of coffee, one image: the map for the cat's class lies mostly
    on the left half, the map for the coffee's class mostly on the right."""
    from cnn_book.data import sample_photos

    place_offline_weights()
    net = cnn_book.get_model("mobilenet_v2", weights="IMAGENET1K_V1")
    photos = sample_photos(["chelsea", "coffee"])
    x = torch.cat([net.preprocess(photos[n]) for n in ("chelsea", "coffee")], dim=2).unsqueeze(0)  # 224 x 448
    for name, side in (("tabby", 0), ("espresso", 1)):
        cam, _ = transfer.grad_cam(net, x, net.features[-1], target=net.categories.index(name))
        halves = cam[:, : cam.shape[1] // 2].sum(), cam[:, cam.shape[1] // 2:].sum()
        assert halves[side] > 2 * halves[1 - side], (name, halves)


def test_unfreeze_restores_gradients_and_trainable_batch_norms_with_the_same_outputs():
    torch.manual_seed(0)
    net = cnn_book.get_model("mobilenet_v2", num_classes=10, width_mult=0.25).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        before = net(x)
    n_params = sum(p.numel() for p in net.parameters())
    transfer.freeze(net, "features")
    assert transfer.unfreeze(net, "features.17", "features.18") > 0  # the last blocks first
    assert any(p.requires_grad for p in net.features[18].parameters())
    assert not any(p.requires_grad for p in net.features[0].parameters())
    transfer.unfreeze(net)
    assert transfer.trainable(net) == sum(p.numel() for p in net.parameters()) == n_params
    assert not any(isinstance(m, FrozenBatchNorm2d) for m in net.modules())
    with torch.no_grad():
        assert torch.allclose(net.eval()(x), before, atol=1e-5)


def test_mistakes_shows_the_images_a_model_gets_wrong_with_their_grad_cam(small_fmnist, capsys):
    """A hand-made case: a network that always answers class 0 is wrong exactly on the images of
    the other classes, and the figure shows those, first by index, with a Grad-CAM row each."""
    import matplotlib

    matplotlib.use("Agg")
    from cnn_book import plot

    conv = nn.Conv2d(1, 4, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 10))
    with torch.no_grad():
        model[-1].weight.zero_()
        model[-1].weight[0] = 1.0  # class 0 always wins on ReLU features
        model[-1].bias.zero_()
        model[-1].bias[0] = 1.0
    fig = plot.mistakes(model, small_fmnist, n=4, cam_layer=conv)
    out = capsys.readouterr().out
    y = small_fmnist.test_y
    wrong = (y != 0).nonzero().flatten()
    assert f"{len(wrong):,} of {len(y):,} test images wrong" in out
    first = wrong[:4].tolist()
    for i in first:
        assert f"#{i}: {small_fmnist.classes[int(y[i])]} called {small_fmnist.classes[0]}" in out
    assert len(fig.axes) == 12  # 4 images x (image, Grad-CAM predicted, Grad-CAM true)
    assert [ax.get_title().split()[0] for ax in fig.axes[:4]] == [f"#{i}" for i in first]
