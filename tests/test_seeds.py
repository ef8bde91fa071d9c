"""cnn_book.seeds: a set-up trained over seeds, its mean and spread, and what a comparison may say."""

import math

import pytest

from cnn_book import seeds
from cnn_book.data import ImageData
from cnn_book.models import get_model


def _tiny(d, n=256):
    return ImageData(d.name, d.classes, d.train_x[:n], d.train_y[:n], d.test_x[:n], d.test_y[:n], d.mean, d.std)


def test_each_seed_is_a_run_and_the_same_seed_the_same_run(small_fmnist, capsys):
    data = _tiny(small_fmnist)
    settings = {"epochs": 1, "batch_size": 64, "device": "cpu"}
    runs = seeds.over_seeds(lambda: get_model("lenet5"), data, (0, 1), **settings)
    again = seeds.over_seeds(lambda: get_model("lenet5"), data, (0,), **settings)
    assert runs.name == "LeNet5" and runs.seeds == [0, 1] and len(runs.histories) == len(runs.models) == 2
    assert runs.values[0] == again.values[0] != runs.values[1]  # seeded: the same seed, the same figure
    assert runs.values == [h["test_acc"][-1] for h in runs.histories]
    out = capsys.readouterr().out
    assert out.count("LeNet5, seed ") == 3 and "Done:" not in out  # one line a seed, not fit's lines
    with pytest.raises(ValueError, match="seeds must be different"):
        seeds.over_seeds(lambda: get_model("lenet5"), data, (0, 0), **settings)


def test_mean_spread_and_the_verdict_are_computed_from_the_values():
    a = seeds.SeedRuns("wide", "test_acc", [0, 1, 2], [0.86, 0.85, 0.87])
    b = seeds.SeedRuns("narrow", "test_acc", [0, 1, 2], [0.855, 0.84, 0.845])
    c = seeds.SeedRuns("tiny", "test_acc", [0, 1, 2], [0.80, 0.81, 0.79])
    assert math.isclose(a.mean, 0.86) and math.isclose(a.std, 0.01) and (a.low, a.high) == (0.85, 0.87)
    assert str(a) == "wide: test_acc 86.00 ± 1.00 % over 3 seeds (from 85.00 to 87.00)"
    assert seeds.compare(a, b) == "wide - narrow: +1.33 points (within noise: the ranges overlap)"
    assert seeds.compare(a, c).endswith("(separated: the seeds' ranges apart)")
    lines = seeds.table([a, c]).splitlines()
    assert lines[1].split() == ["wide", "86.00", "1.00", "85.00", "87.00", "3"]
    assert math.isnan(seeds.SeedRuns("one", "test_acc", [0], [0.5]).std)


def test_nonsense_is_refused(small_fmnist):
    with pytest.raises(ValueError, match="seeds must be different whole numbers"):
        seeds.over_seeds(lambda: get_model("lenet5"), small_fmnist, [])
    with pytest.raises(ValueError, match="the runs have no 'test_miou'"):
        seeds.over_seeds(lambda: get_model("lenet5"), _tiny(small_fmnist, 64), [0], metric="test_miou", epochs=1,
                         device="cpu")
