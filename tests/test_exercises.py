"""The exercise checkers: a right answer passes, a wrong one gets a hint and not the answer (unless asked)."""

import pytest
import torch
from torch import nn

import cnn_book
from cnn_book import exercises, inspect
from cnn_book.scores import SegmentationScores


def test_a_wrong_shape_or_count_gets_a_hint_and_not_the_answer(capsys):
    conv = nn.Conv2d(1, 6, 5, padding=2)
    assert not exercises.check_output_size(conv, (1, 28, 28), (6, 24, 24))
    assert not exercises.check_param_count(conv, 150)
    out = capsys.readouterr().out
    assert "(6, 28, 28)" not in out and "156" not in out
    assert out.count("Hint") == 2 and out.count("reveal=True") == 2
    assert not exercises.check_param_count(conv, 150, reveal=True)
    assert "156" in capsys.readouterr().out


@pytest.mark.parametrize("label", list(exercises.NUMBERS))
def test_numbers_pass_the_right_answer_and_hint_at_a_wrong_one(label, capsys):
    real = exercises.NUMBERS[label].compute()
    assert exercises.check_number(label, real)
    wrong = real * 1.5 + 3
    assert not exercises.check_number(label, wrong)
    out = capsys.readouterr().out
    assert "Correct" in out and "too high" in out and "Hint" in out
    shown = out.split("Correct: ")[1].splitlines()[0].split(" is ")[-1].rstrip(".")
    assert shown not in out.split("Not quite")[1]  # the answer is not in the verdict on the wrong try
    assert not exercises.check_number(label, real * 0.5 - 3)
    assert "too low" in capsys.readouterr().out


def test_numbers_are_the_package_s_own_figures():
    vgg = cnn_book.get_model("vgg16")
    rf = inspect.summary(vgg, (3, 224, 224), depth=2).row("features.30").receptive_field
    assert exercises.NUMBERS["vgg16-rf"].compute() == rf == 212
    r18 = cnn_book.get_model("resnet18")
    shortcuts = sum(inspect.count_parameters(m) for n, m in r18.named_modules() if n.endswith("downsample"))
    assert exercises.NUMBERS["resnet18-shortcut-share"].compute() == pytest.approx(
        100 * shortcuts / inspect.count_parameters(r18))
    from cnn_book.models.blocks import SqueezeExcitation

    b0 = cnn_book.get_model("efficientnet_b0")
    se = [m for m in b0.modules() if isinstance(m, SqueezeExcitation)]
    assert len(se) == 16  # one per MBConv block
    assert exercises.NUMBERS["efficientnet-se-share"].compute() == pytest.approx(
        100 * sum(map(inspect.count_parameters, se)) / inspect.count_parameters(b0))
    flops = [inspect.summary(cnn_book.get_model("alexnet", num_classes=10, in_channels=1, input_size=s),
                             (1, s, s)).total_flops for s in (64, 224)]
    assert exercises.NUMBERS["alexnet-flops-ratio"].compute() == pytest.approx(flops[1] / flops[0])
    # the naive inception module against the real one, measured by the FLOP counter (no biases)
    from cnn_book.models.googlenet import INCEPTION, Inception

    c_in, c1, _, c3, _, c5, _ = INCEPTION["3a"]
    naive = [nn.Conv2d(c_in, c, k, padding=k // 2, bias=False) for c, k in ((c1, 1), (c3, 3), (c5, 5))]
    x = torch.zeros(1, c_in, 28, 28)
    naive_flops = sum(inspect.flops_by_module(m, x)[""] for m in naive)
    real_flops = inspect.flops_by_module(Inception(*INCEPTION["3a"], kernel5=5).eval(), x)[""]
    assert exercises.numeric._inception_saving("3a") == pytest.approx(naive_flops / real_flops, rel=1e-3)
    assert exercises.check_number("googlenet-4e-saving", 3.8)  # 3.86, within 2 %
    assert not exercises.check_number("googlenet-4e-saving", 3.7)
    with pytest.raises(ValueError, match="no numeric exercise"):
        exercises.check_number("vgg-16-rf", 212)


def test_a_function_is_checked_on_hidden_cases_against_the_package_s(capsys):
    assert exercises.check_function("conv-output-size", lambda n, k, s, p, d: (n + 2 * p - d * (k - 1) - 1) // s + 1)
    assert not exercises.check_function("conv-output-size", lambda n, k, s, p, d: (n + 2 * p - k) // s + 1)
    out = capsys.readouterr().out
    assert "Correct" in out and "Hint" in out and "reveal=True" in out and "the answer is" not in out

    def iou(pred, target, k):  # a reader's IoU, class by class
        return torch.stack([((pred == c) & (target == c)).sum() / ((pred == c) | (target == c)).sum()
                            for c in range(k)])

    assert exercises.check_function("iou", iou)
    assert not exercises.check_function("iou", lambda p, t, k: torch.ones(k))

    def dice(pred, target, c):
        p, g = pred == c, target == c
        return 2 * (p & g).sum().item() / (p.sum() + g.sum()).item()

    assert exercises.check_function("dice", dice)
    assert not exercises.check_function("dice", lambda p, t, c: 0.5)
    assert not exercises.check_function("receptive-field", lambda layers: 1 + sum(k - 1 for k, _ in layers))
    assert not exercises.check_function("separable-cost", lambda h, w, ci, co, k: h * w * ci * co * k * k)
    assert exercises.check_function("same-padding", lambda k, d: d * (k - 1) // 2)
    assert not exercises.check_function("same-padding", lambda k, d: k // 2)
    assert not exercises.check_function("iou", lambda p, t, k: 1 / 0)
    assert "ZeroDivisionError" in capsys.readouterr().out


def test_the_reference_functions_agree_with_the_package_s_layers_and_scores():
    # receptive field: against inspect's, on a real stack of layers
    layers = [(3, 1), (3, 1), (2, 2), (3, 1), (5, 2)]
    stack = nn.Sequential(*[nn.Conv2d(1, 1, k, stride=s) for k, s in layers])
    assert exercises.FUNCTIONS["receptive-field"].reference(layers) == max(
        inspect.receptive_fields(stack, torch.zeros(1, 1, 64, 64)).values())
    # separable cost: against the FLOP counter (2 FLOPs per mult-add, no bias)
    sep = nn.Sequential(nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False), nn.Conv2d(32, 64, 1, bias=False))
    flops = inspect.flops_by_module(sep, torch.zeros(1, 32, 14, 14))[""]
    assert exercises.FUNCTIONS["separable-cost"].reference(14, 14, 32, 64, 3) == flops // 2
    # IoU: against the segmentation scores the chapters print
    g = torch.Generator().manual_seed(0)
    target, pred = torch.randint(0, 4, (2, 8, 8), generator=g), torch.randint(0, 4, (2, 8, 8), generator=g)
    confusion = torch.zeros(4, 4, dtype=torch.long)
    for t, p in zip(target.flatten().tolist(), pred.flatten().tolist(), strict=True):
        confusion[t, p] += 1  # counted one pixel at a time
    scores = SegmentationScores([str(c) for c in range(4)], confusion, 0.0)
    assert torch.allclose(exercises.FUNCTIONS["iou"].reference(pred, target, 4), scores.iou.double())


def test_the_transfer_chapter_s_checkers_agree_with_real_layers():
    # the linear probe trains the new head only: 1,280 pooled features to 10 classes, with biases
    assert exercises.NUMBERS["transfer-probe-params"].compute() == 1280 * 10 + 10
    # the one-channel first layer: on a grey image, the same output as the RGB layer on the image
    # repeated three times and normalised with ImageNet's statistics (no padding: zeros are not grey)
    from cnn_book.transfer import IMAGENET_MEAN, IMAGENET_STD

    g = torch.Generator().manual_seed(0)
    conv = nn.Conv2d(3, 8, 3).double()
    grey = torch.rand(2, 1, 12, 12, generator=g, dtype=torch.float64)
    m, s = (torch.tensor(v, dtype=torch.float64).view(1, 3, 1, 1) for v in (IMAGENET_MEAN, IMAGENET_STD))
    w1, b1 = exercises.FUNCTIONS["grey-first-layer"].reference(conv.weight.detach(), conv.bias.detach(),
                                                               IMAGENET_MEAN, IMAGENET_STD)
    with torch.no_grad():
        assert torch.allclose(conv((grey.expand(-1, 3, -1, -1) - m) / s), nn.functional.conv2d(grey, w1, b1))
    assert not exercises.check_function("grey-first-layer", lambda w, b, mean, std: (w.sum(1, keepdim=True), b))


def test_the_yolo_chapter_s_checkers():
    def iou(a, b):  # by hand, from the corners
        w = max(0.0, float(min(a[2], b[2]) - max(a[0], b[0])))
        h = max(0.0, float(min(a[3], b[3]) - max(a[1], b[1])))
        inter = w * h
        return inter / float((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)

    assert exercises.check_function("box-iou", iou)
    # the classic slip: no clamp, so two boxes apart in x and in y "overlap" by a positive product
    assert not exercises.check_function("box-iou", lambda a, b: float(
        (min(a[2], b[2]) - max(a[0], b[0])) * (min(a[3], b[3]) - max(a[1], b[1]))
        / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]))))

    def nms(boxes, scores, t):
        order, keep = scores.argsort(descending=True), []
        while len(order):
            keep.append(int(order[0]))
            rest = order[1:]
            order = rest[torch.tensor([iou(boxes[order[0]], boxes[r]) <= t for r in rest], dtype=torch.bool)]
        return torch.tensor(keep, dtype=torch.int64)

    assert exercises.check_function("nms", nms)
    assert not exercises.check_function("nms", lambda b, s, t: s.argsort(descending=True))  # suppresses nothing
    yolo = cnn_book.get_model("yolov1")
    fc1 = sum(p.numel() for p in yolo.classifier[1].parameters())
    assert fc1 == 7 * 7 * 1024 * 4096 + 4096
    assert exercises.NUMBERS["yolo-fc1-share"].compute() == pytest.approx(100 * fc1 / inspect.count_parameters(yolo))


def test_the_transformer_chapter_s_checkers():
    import math

    import torch.nn.functional as F

    def attention(q, k, v, mask):  # by hand
        scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        if mask is not None:
            scores = scores.masked_fill(~mask, float("-inf"))
        return scores.softmax(-1) @ v

    assert exercises.check_function("attention", attention)
    assert exercises.check_function("attention", lambda q, k, v, m: F.scaled_dot_product_attention(q, k, v, m))
    # the two classic slips: no scaling, and the mask's meaning turned round
    assert not exercises.check_function("attention", lambda q, k, v, m: (
        (q @ k.transpose(-2, -1)).masked_fill(~m if m is not None else torch.zeros((), dtype=torch.bool),
                                              float("-inf")).softmax(-1) @ v))
    assert not exercises.check_function("attention", lambda q, k, v, m: attention(q, k, v, None if m is None else ~m))
    assert exercises.check_function("padding-mask", lambda pad: ~pad[:, None, None, :])
    assert not exercises.check_function("padding-mask", lambda pad: pad[:, None, None, :])  # the convention turned
    assert not exercises.check_function("padding-mask", lambda pad: ~pad)  # does not broadcast over heads, queries
