import dataclasses

import matplotlib
import pytest
import torch

from cnn_book import plot, train
from cnn_book.models import get_model

matplotlib.use("Agg")


def test_loss_falls_and_accuracy_rises_on_a_small_subset(small_fmnist, capsys):
    hist = train.fit(get_model("lenet5"), small_fmnist, epochs=4, batch_size=64, lr=3e-3, device="cpu")
    assert hist.train_loss[-1] < 0.7 * hist.train_loss[0]
    assert hist.test_acc[-1] > 0.6  # ten classes: chance is 0.1
    assert hist.train_images == 4 * 1024 and hist.images_per_s > 0 and hist.wall_seconds >= hist.train_seconds
    assert len(hist.step_loss) == len(hist.steps) == len(hist.step_error) > 0
    assert all(0 <= e <= 1 for e in hist.step_error) and hist.step_error[-1] < hist.step_error[0]
    out = capsys.readouterr().out
    assert "device cpu" in out and "train images/s" in out and "test accuracy" in out and "wall time" in out
    loss, acc = train.evaluate(get_model("lenet5"), small_fmnist)
    assert 2.0 < loss < 2.6 and 0.0 <= acc <= 0.3  # an untrained net is near chance, log(10) = 2.30
    assert hist.to_dict()["final_test_acc"] == hist.test_acc[-1]


def test_quick_mode_caps_the_work_and_says_so(fmnist, monkeypatch, capsys):
    monkeypatch.setenv("CNN_BOOK_QUICK", "1")
    assert train.quick_mode()
    hist = train.fit(get_model("lenet5"), fmnist, epochs=30, device="cpu")
    assert hist.quick and hist.epochs == [1, 2] == list(range(1, train.QUICK_EPOCHS + 1))
    assert hist.train_images == train.QUICK_EPOCHS * train.QUICK_TRAIN_IMAGES
    assert "QUICK MODE (CNN_BOOK_QUICK=1)" in capsys.readouterr().out
    monkeypatch.setenv("CNN_BOOK_QUICK", "0")
    assert not train.quick_mode()


def test_training_is_seeded(small_fmnist):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the same initial weights
        runs.append(train.fit(get_model("simple_cnn"), small_fmnist, epochs=1, device="cpu", seed=3))
    assert runs[0].train_loss == runs[1].train_loss and runs[0].test_acc == runs[1].test_acc


def test_device_choice_and_bad_optimizer(small_fmnist):
    assert train.default_device().type in ("cuda", "mps", "cpu")
    with pytest.raises(ValueError, match="optimizer must be"):
        train.fit(get_model("lenet5"), small_fmnist, epochs=1, optimizer="rmsprop", device="cpu")


def _labelled(fig):
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    return fig._suptitle is not None or any(ax.get_title() for ax in axes)


def test_plots_have_titles_and_labelled_axes(small_fmnist):
    model = get_model("lenet5")
    hist = train.fit(model, small_fmnist, epochs=2, device="cpu")
    fig = plot.training_curves(hist)
    assert [ax.get_xlabel() for ax in fig.axes] == ["epoch", "epoch"]
    assert fig.axes[1].get_ylabel() == "accuracy (%)" and _labelled(fig)
    fig = plot.confusion_matrix(model, small_fmnist)
    assert fig.axes[0].get_xlabel() == "predicted class" and "512" in fig.axes[0].get_title()
    fig = plot.feature_maps(model, small_fmnist.images("test", 0), ["features.0", "features.3"])
    assert "features.0: 6 maps of (28, 28)" in fig._suptitle.get_text()
    assert len([ax for ax in fig.axes if ax.images]) == 6 + 16
    fig = plot.filters(model.features[0])
    assert len([ax for ax in fig.axes if ax.images]) == 6 and "5x5" in fig._suptitle.get_text()
    fig = plot.sample_grid(small_fmnist, n=10)
    assert len([ax for ax in fig.axes if ax.images]) == 10 and _labelled(fig)
    with pytest.raises(ValueError, match="no layer named"):
        plot.feature_maps(model, small_fmnist.images("test", 0), ["conv1"])
    matplotlib.pyplot.close("all")


def test_results_are_recorded_only_from_full_runs(small_fmnist, tmp_path, monkeypatch):
    from cnn_book import results
    from cnn_book.inspect import summary

    model = get_model("lenet5")
    hist = train.fit(model, small_fmnist, epochs=1, device="cpu")
    monkeypatch.setenv("CNN_BOOK_RESULTS", str(tmp_path))
    path = results.record("lenet5", "02", hist, summary(model))
    row = results.load_all()[0]
    assert path.exists() and row["params"] == 61_706 and row["test_acc"] == hist.final_test_acc
    assert row["input"] == "1x28x28" and hist.input_shape == (1, 28, 28)
    with pytest.raises(ValueError, match="trained on"):  # a summary of another input size is refused
        results.record("lenet5", "02", hist, dataclasses.replace(summary(model), input_shape=(1, 32, 32)))
    monkeypatch.setenv("CNN_BOOK_QUICK", "1")
    path.unlink()
    assert results.record("lenet5", "02", hist, summary(model)) is None and not path.exists()


def test_auxiliary_losses_are_added_with_the_model_s_weight(small_fmnist, capsys):
    model = get_model("googlenet", num_classes=10, in_channels=1, small_input=True, width_mult=0.125)
    logits, aux = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy
    _, loss, _ = train._loss(model, (logits, aux, None), y, 0.0)
    assert torch.allclose(loss, ce(logits, y) + 0.3 * ce(aux, y))
    hist = train.fit(model, small_fmnist, epochs=1, batch_size=64, device="cpu")  # GoogLeNet trains with aux heads
    assert hist.train_images == 1024 and "test accuracy" in capsys.readouterr().out
