"""The benchmark's measurements of where LeNet-5's training step spends its time (benchmarks/bench.py)."""

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench", ROOT / "benchmarks" / "bench.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_foreach_adamw_trains_the_same_weights_bit_for_bit_and_fused_does_not(bench):
    # what the benchmark page says of AdamW's three implementations, on 20 steps
    weights = {"default": [], "foreach": [], "fused": []}
    for name, adamw in {"default": {}, "foreach": {"foreach": True}, "fused": {"fused": True}}.items():
        assert bench.steps_only(2560, channels_last=True, weights=weights[name], **adamw) > 0
    assert bench.same_weights(weights["default"][0], weights["foreach"][0])
    assert not bench.same_weights(weights["default"][0], weights["fused"][0])
    assert not bench.same_weights(weights["default"][0], weights["default"][0][:-1])


def test_the_step_is_split_into_phases_and_operators(bench):
    step = bench.step_phases(1280)
    assert list(step["ms_per_step"]) == ["forward and loss", "backward", "optimiser"]
    assert all(ms > 0 for ms in step["ms_per_step"].values())
    names = [name for name, _ in step["top_ops"]]
    assert len(names) == 8 and "aten::convolution_backward" in names
    shares = [share for _, share in step["top_ops"]]
    assert shares == sorted(shares, reverse=True) and 0 < sum(shares) <= 1


def test_fit_on_batches_made_beforehand_is_fit_without_its_data_path(bench, small_fmnist):
    """The ceiling is measured alike: fit on the prepared batches runs the same steps on the same
    batches in the same order, so it trains the same weights bit for bit; only the data path is gone."""
    import torch

    from cnn_book.models import get_model
    from cnn_book.train import fit

    weights = []
    for data in (small_fmnist, bench.prepared(small_fmnist, 128)):
        torch.manual_seed(0)
        model = get_model("lenet5")
        fit(model, data, epochs=1, batch_size=128, device="cpu", progress=False)
        weights.append([p.detach().clone() for p in model.parameters()])
    assert bench.same_weights(*weights)
    assert len(bench.prepared(small_fmnist, 128).prepared) == 8  # 1,024 images in batches of 128


def test_reference_ratios_time_both_models_of_each_pair_and_divide(bench, monkeypatch):
    """The structure of the Benchmarks page's third table, on two small stand-ins (the real pairs,
    BERT-base, GPT-2 small and ViT-B/16 on the same weights, are proved equal by their own tests and
    timed by `make bench`): each pair's medians and their ratio."""
    import torch
    from torch import nn

    small, large = nn.Linear(8, 8), nn.Sequential(*[nn.Linear(8, 8) for _ in range(20)])
    x = (torch.randn(4, 8),)
    monkeypatch.setattr(bench, "_reference_pairs", lambda: iter([("pair", small, large, x, lambda o: o,
                                                                  lambda o: o)]))
    out = bench.reference_ratios(repeats=3)
    row = out["pair"]
    assert set(row) == {"ours_ms", "reference_ms", "ratio"} and row["ours_ms"] > 0
    assert 0 < row["ratio"] < 1  # one layer against twenty: the first of the pair is the faster
