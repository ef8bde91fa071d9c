import time

import pytest
import torch
from torch import nn

from cnn_book import inspect
from cnn_book.exercises import check_output_size, check_param_count, conv_output_size
from cnn_book.inspect import gradient_norms, layer_shapes, receptive_fields, summary
from cnn_book.models import get_model


def test_summary_lists_nested_blocks_with_shapes_params_and_flops():
    s = summary(get_model("lenet5", variant="1998"))
    names = [r.name for r in s.rows]
    # nested blocks are listed, not only the top-level children
    assert {"features", "features.c3", "features.c3.convs.0", "features.c3.convs.2", "classifier.f6"} <= set(names)
    assert s.row("features.c3").depth == 1 and s.row("features.c3.convs.1").depth == 3
    assert s.row("features.c3").output_shape == (16, 10, 10)
    assert s.row("features.c3.convs.1").output_shape == (9, 10, 10)  # the 9 maps that read 4 inputs
    assert s.row("features.c3").params == 1516 == sum(s.row(f"features.c3.convs.{i}").params for i in range(3))
    assert s.total_params == s.trainable_params == 60_000
    # one multiply-add = 2 FLOPs: C1 has 6 maps x 28x28 positions x 25 weights
    assert s.row("features.c1").flops == 2 * 6 * 28 * 28 * 25
    assert s.total_flops == sum(r.flops for r in s.rows if r.depth == 0)
    text = str(s)
    assert "c3 (ConnectionTableConv)" in text and "Total parameters:     60,000" in text


def test_receptive_fields_of_a_chain_and_none_after_a_branch():
    s = summary(get_model("lenet5"))
    rf = {r.name: r.receptive_field for r in s.rows}
    assert (rf["features.0"], rf["features.2"], rf["features.3"], rf["features.5"]) == (5, 6, 14, 16)
    assert rf["classifier.0"] is None  # after the flatten the receptive field is not a square patch

    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 2, 3)
            self.b = nn.Conv2d(2, 2, 3, padding=1)
            self.c = nn.Conv2d(2, 2, 3, stride=2)

        def forward(self, x):
            x = self.a(x)
            return self.c(x + self.b(x))  # a residual addition: c reads neither a nor b alone

    rf = receptive_fields(Branchy(), torch.zeros(1, 1, 16, 16))
    assert rf == {"a": 3, "b": 5}


def test_depth_limits_rows_and_layer_shapes_lists_leaves():
    s = summary(get_model("lenet5", variant="1998"), depth=1)
    assert all(r.depth <= 1 for r in s.rows) and s.total_params == 60_000
    shapes = dict(layer_shapes(get_model("lenet5")))
    assert shapes["features.2"] == (6, 14, 14) and shapes["classifier.4"] == (10,)


def test_output_size_formula_matches_real_layers():
    for n in (7, 28, 32, 224, 227):
        for k, s, p, d in [(3, 1, 1, 1), (5, 1, 0, 1), (11, 4, 2, 1), (3, 2, 0, 1), (3, 1, 2, 2), (2, 2, 0, 1)]:
            real = nn.Conv2d(1, 1, k, stride=s, padding=p, dilation=d)(torch.zeros(1, 1, n, n)).shape[-1]
            assert conv_output_size(n, k, s, p, d) == real


def test_exercise_checkers_say_right_and_wrong(capsys):
    conv = nn.Conv2d(1, 6, 5, padding=2)
    assert check_output_size(conv, (1, 28, 28), (6, 28, 28))
    assert not check_output_size(conv, (1, 28, 28), (6, 24, 24))
    assert check_param_count(conv, 156) and not check_param_count(conv, 150)
    out = capsys.readouterr().out
    assert out.count("Correct") == 2 and out.count("Not quite") == 2 and "(6, 28, 28)" in out


def test_gradient_norms_per_convolution_leave_the_model_untouched():
    torch.manual_seed(0)
    model = get_model("resnet_cifar", depth=8, in_channels=1).eval()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    norms = gradient_norms(model, x, y)
    convs = [n for n, m in model.named_modules() if isinstance(m, nn.Conv2d)]
    assert list(norms) == convs and convs[0] == "conv1" and len(convs) == 7  # 1 + 3 stages x 1 block x 2
    assert all(v > 0 for v in norms.values())
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_latency_is_the_median_forward_time_in_eval_mode():
    class Slow(nn.Module):
        """Sleeps 20 ms per call, once 200 ms (an outlier the median must ignore); records its mode and input."""

        def __init__(self):
            super().__init__()
            self.calls, self.seen = 0, []

        def forward(self, x):
            self.calls += 1
            self.seen.append((self.training, tuple(x.shape)))
            time.sleep(0.2 if self.calls == 4 else 0.02)
            return x

    model = Slow().train()
    t = inspect.latency(model, (1, 5, 5), batch_size=3, min_run_time=0.15)
    assert 0.019 <= t < 0.05  # the 200 ms pass is one timed block among several: the median ignores it
    assert model.calls >= 4 and model.training  # a warm-up pass, then timed ones; the mode is restored
    assert all(seen == (False, (3, 1, 5, 5)) for seen in model.seen)
    fast = get_model("lenet5")
    per_pass = inspect.latency(fast, min_run_time=0.05)
    assert 0 < per_pass < 0.05  # LeNet-5: blocks of many passes, the time per pass


# --- receptive_field: one output pixel's window, measured by gradients --------------------------

def test_a_stack_of_3x3_convolutions_sees_2L_plus_1_pixels():
    for depth in range(1, 5):
        stack = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(depth)])
        rf = inspect.receptive_field(stack, (1, 21, 21))
        assert rf.pixel == (10, 10) and rf.size == (2 * depth + 1, 2 * depth + 1)
        assert rf.rows == (10 - depth, 10 + depth) and rf.context() == (depth,) * 4


def test_a_stride_2_layer_spaces_the_windows_two_pixels_apart():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2), nn.ReLU(), nn.Conv2d(2, 1, 3))
    for i in range(3):  # 3 + (3 - 1) * 2 = 7 pixels, starting at 2i
        rf = inspect.receptive_field(net, (1, 15, 15), (i, i))
        assert rf.rows == (2 * i, 2 * i + 6) and rf.size == (7, 7)


def test_the_window_can_depend_on_the_pixel_s_phase():
    """After a pool and an up-convolution (U-Net's pair), neighbouring output pixels share a
    window: rows 2k and 2k + 1 both see rows 2k to 2k + 3, so the context above and below a
    pixel depends on whether its row is even or odd."""
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.ConvTranspose2d(1, 1, 2, stride=2))
    even, odd = (inspect.receptive_field(net, (1, 18, 18), (r, 4)) for r in (4, 5))
    assert even.rows == odd.rows == (4, 7)
    assert even.context(offset=1)[:2] == (1, 2) and odd.context(offset=1)[:2] == (2, 1)


def test_it_agrees_with_the_layer_by_layer_walk_on_a_chain_and_ignores_weights():
    chain = nn.Sequential(nn.Conv2d(1, 4, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 4, 3), nn.ReLU(),
                          nn.MaxPool2d(2), nn.Conv2d(4, 1, 3))
    walk = inspect.receptive_fields(chain, torch.zeros(1, 1, 64, 64))["6"]
    with torch.no_grad():
        for p in chain.parameters():
            p.zero_()  # a dead network: the probe's own positive weights, not these, decide
    assert inspect.receptive_field(chain, (1, 64, 64)).size == (walk, walk)


def test_the_valid_u_net_s_window_depends_on_the_output_row():
    """The paper's geometry (valid convolutions, four levels) at width 1: each output pixel sees a
    window of 188 to 204 pixels depending on its position, around the crop's 92 on each side."""
    unet = get_model("unet", base_width=1, padding="valid")
    sizes = {inspect.receptive_field(unet, (1, 204, 204), (r, 10)).size[0] for r in range(16)}
    assert min(sizes) == 188 and max(sizes) == 204
    with pytest.raises(ValueError, match=r"pixel \(99, 0\) is outside the 20x20 output map"):
        inspect.receptive_field(unet, (1, 204, 204), (99, 0))
    with pytest.raises(ValueError, match="needs a model whose output is a map"):
        inspect.receptive_field(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (1, 2, 2))


def test_many_pixels_in_one_pass_give_each_its_own_window():
    net = nn.Sequential(nn.Conv2d(1, 1, 3), nn.MaxPool2d(2), nn.ConvTranspose2d(1, 1, 2, stride=2))
    pixels = [(r, c) for r in (3, 4, 5) for c in (2, 7)]
    each = inspect.receptive_field_of_each(net, (1, 18, 18), pixels)
    assert each == [inspect.receptive_field(net, (1, 18, 18), p) for p in pixels]


def test_low_frequency_share_tells_smooth_kernels_from_noise():
    r = torch.arange(11.0)
    ramp = (r[None, :] + 0 * r[:, None])[None, None]  # one slow ramp: mostly the lowest frequencies
    flat = torch.ones(1, 1, 11, 11)
    checker = ((r[None, :] + r[:, None]) % 2 * 2 - 1)[None, None]  # the highest frequency there is
    shares = inspect.low_frequency_share(torch.cat([flat, ramp, checker]))
    assert shares[0] == pytest.approx(1.0) and shares[1] > 0.9 and shares[2] < 0.05
    noise = inspect.low_frequency_share(torch.randn(4000, 3, 11, 11, generator=torch.Generator().manual_seed(0)))
    assert noise.mean() == pytest.approx(25 / 121, abs=0.01)  # white noise: 5 x 5 of the 11 x 11 frequencies
    with pytest.raises(ValueError, match="square kernels"):
        inspect.low_frequency_share(torch.zeros(2, 3, 5))


def test_kernel_patterns_name_known_kernels():
    r = torch.arange(3.0) - 1
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    corner = torch.zeros(3, 3)
    corner[0, 0] = 1.0
    centre = -torch.ones(3, 3)
    centre[1, 1] = 8.0
    w = torch.stack([xx, yy, -xx + 0.1, torch.ones(3, 3), centre, corner, xx + 0.8])[:, None]
    rows = inspect.kernel_patterns(w)
    assert [row["kind"] for row in rows] == ["edge", "edge", "edge", "mean", "centre-surround", "one weight",
                                             "mixed"]
    assert [round(row["angle"]) for row in rows[:3]] == [0, 90, 180]  # rising right, down, left
    assert rows[0]["edge"] == pytest.approx(1.0) and rows[3]["mean"] == pytest.approx(1.0)
    assert all(sum(row[p] for p in inspect.PATTERNS) <= 1 + 1e-6 for row in rows)  # orthonormal shares
    text = inspect.describe_kernels(w)
    assert "edge: 3: #0 (0 deg), #1 (90 deg), #2 (180 deg)" in text and "one weight: 1: #5" in text
    with pytest.raises(ValueError, match="square kernels of 3x3"):
        inspect.kernel_patterns(torch.zeros(4, 1, 1, 1))
