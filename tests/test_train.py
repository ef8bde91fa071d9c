import dataclasses
import json
import math
from pathlib import Path

import matplotlib
import pytest
import torch
from torch import nn

from cnn_book import plot, settings, train
from cnn_book.data import ImageData, batch_indices
from cnn_book.models import get_model
from cnn_book.tasks import Task

matplotlib.use("Agg")


def test_loss_falls_and_accuracy_rises_on_a_small_subset(small_fmnist, capsys):
    hist = train.fit(get_model("lenet5"), small_fmnist, epochs=4, batch_size=64, lr=3e-3, device="cpu")
    assert hist["train_loss"][-1] < 0.7 * hist["train_loss"][0]
    assert hist["test_acc"][-1] > 0.6  # ten classes: chance is 0.1
    assert hist.train_images == 4 * 1024 and hist.images_per_s > 0 and hist.wall_seconds >= hist.train_seconds
    assert len(hist.step_loss) == len(hist.steps) == len(hist.step_error) > 0
    assert all(0 <= e <= 1 for e in hist.step_error) and hist.step_error[-1] < hist.step_error[0]
    assert hist.task == "classification" and hist.precision == "fp32" and hist.skipped_steps == 0
    out = capsys.readouterr().out
    for words in ("device cpu", "precision fp32", "train images/s", "test accuracy", "wall time", "in fp32"):
        assert words in out.replace("\n  ", " ")
    assert max(map(len, out.splitlines())) <= settings.COLUMN  # the website's column: no sideways scroll
    scores = train.evaluate(get_model("lenet5"), small_fmnist)
    assert 2.0 < scores["loss"] < 2.6 and 0.0 <= scores["acc"] <= 0.3  # untrained: near chance, log(10) = 2.30
    assert hist.to_dict()["final_test_acc"] == hist["test_acc"][-1] == hist.to_dict()["test_acc"][-1]
    with pytest.raises(KeyError, match="its curves are"):
        hist["test_miou"]  # a classifier has no mean IoU  # noqa: B018


def test_quick_mode_caps_the_work_and_says_so(fmnist, monkeypatch, capsys):
    monkeypatch.setenv("CNN_BOOK_QUICK", "1")
    assert train.quick_mode()
    hist = train.fit(get_model("lenet5"), fmnist, epochs=30, device="cpu")
    assert hist.quick and hist.epochs == [1, 2] == list(range(1, train.QUICK_EPOCHS + 1))
    assert hist.train_images == train.QUICK_EPOCHS * train.QUICK_TRAIN_IMAGES
    out = capsys.readouterr().out
    assert "QUICK MODE (CNN_BOOK_QUICK=1)" in out
    assert max(map(len, out.splitlines())) <= settings.COLUMN
    monkeypatch.setenv("CNN_BOOK_QUICK", "0")
    assert not train.quick_mode()


@pytest.mark.parametrize(("value", "expected"), [
    ("1", True), ("true", True), (" Yes ", True), ("ON", True), ("0", False), ("False", False), ("no", False),
    (" off", False), ("", None), (None, None)])
def test_one_reading_of_the_environment(monkeypatch, value, expected):
    for name, default, read in (("CNN_BOOK_QUICK", False, settings.quick_mode),
                                ("CNN_BOOK_OFFLINE", False, settings.offline),
                                ("CNN_BOOK_PROGRESS", True, settings.progress_bars)):
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
        assert read() is (default if expected is None else expected)


@pytest.mark.parametrize("value", ["2", "of", "enabled", "y es"])
def test_a_switch_it_does_not_understand_is_an_error_that_names_it(monkeypatch, value):
    monkeypatch.setenv("CNN_BOOK_QUICK", value)
    with pytest.raises(ValueError, match=r"CNN_BOOK_QUICK=.* is not understood: use one of 1/true/yes/on"):
        train.quick_mode()


def test_training_is_seeded(small_fmnist):
    runs = []
    for _ in range(2):
        torch.manual_seed(0)  # the same initial weights
        runs.append(train.fit(get_model("simple_cnn"), small_fmnist, epochs=1, device="cpu", seed=3))
    assert runs[0]["train_loss"] == runs[1]["train_loss"] and runs[0]["test_acc"] == runs[1]["test_acc"]


# --- precision -------------------------------------------------------------------------------------

@pytest.mark.parametrize(("capability", "name", "scaled"), [((7, 5), "fp16", True), ((7, 0), "fp16", True),
                                                           ((8, 0), "bf16", False), ((9, 0), "bf16", False)])
def test_precision_follows_the_gpu_s_compute_capability(capability, name, scaled):
    p = train.precision_for("cuda", capability=capability)  # a T4 is (7, 5): no bf16 tensor cores
    assert (p.name, p.scaled) == (name, scaled)
    assert p.dtype == {"fp16": torch.float16, "bf16": torch.bfloat16}[name]


def test_precision_is_full_on_cpu_and_mps_unless_asked():
    for device in ("cpu", "mps"):
        p = train.precision_for(device)
        assert (p.name, p.dtype, p.scaled) == ("fp32", None, False)
    assert train.precision_for("cpu", prefer="fp16").scaled
    assert train.precision_for("cuda", capability=(9, 0), prefer="fp16").name == "fp16"
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        train.precision_for("cpu", prefer="half")


class _Overflows(nn.Module):
    """LeNet-5 whose logits overflow fp16 (max 65,504) on its third training call, as activations
    of a badly scaled network do under fp16 autocast."""

    def __init__(self):
        super().__init__()
        self.net, self.calls = get_model("lenet5"), 0

    def forward(self, x):
        out = self.net(x)
        self.calls += self.training
        return out * 1e6 if self.training and self.calls == 3 else out


def test_fp16_with_a_grad_scaler_skips_the_step_that_overflowed_and_trains_on(small_fmnist, capsys):
    torch.manual_seed(0)
    model = _Overflows()
    snapshots = []
    model.register_forward_pre_hook(
        lambda m, _: snapshots.append([p.detach().clone() for p in m.parameters()]) if m.training else None)
    hist = train.fit(model, small_fmnist, epochs=3, batch_size=64, lr=3e-3, device="cpu", precision="fp16")
    assert hist.precision == "fp16" and "precision fp16" in capsys.readouterr().out
    assert hist.skipped_steps == 1
    # the third step was skipped: the weights before the fourth forward are those before the third
    assert all(torch.equal(a, b) for a, b in zip(snapshots[2], snapshots[3], strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(snapshots[1], snapshots[2], strict=True))
    # the skipped step's overflowed loss stays out of the curves; the steps are counted all the same
    assert all(math.isfinite(v) for v in hist["train_loss"] + hist.step_loss) and hist.train_images == 3 * 1024
    assert hist["train_loss"][-1] < 0.7 * hist["train_loss"][0] and hist["test_acc"][-1] > 0.6


def test_gradients_are_unscaled_before_they_are_clipped():
    """One clipped SGD step under fp16 + GradScaler moves the weights as the fp32 step does; clipping
    the still-scaled gradients would shrink the step 65,536-fold."""
    x, y = torch.randn(16, 20), torch.randint(0, 5, (16,))
    steps = {}
    for name in ("fp32", "fp16"):
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 5))
        before = [p.detach().clone() for p in model.parameters()]
        opt = torch.optim.SGD(model.parameters(), lr=1.0)
        prec = train.precision_for("cpu", prefer=name)
        scaler = torch.amp.GradScaler("cpu", enabled=prec.scaled)
        with prec.autocast(torch.device("cpu")):
            loss = nn.functional.cross_entropy(model(x).float(), y)
        assert not train._step(loss, opt, scaler, 0.05, model)
        steps[name] = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before, strict=True)])
        assert scaler.get_scale() == (65536.0 if prec.scaled else 1.0)
    assert steps["fp32"].norm() == pytest.approx(0.05, rel=1e-4)  # lr 1: the step is the clipped gradient
    assert steps["fp16"].norm() == pytest.approx(0.05, rel=1e-2)
    assert torch.allclose(steps["fp16"], steps["fp32"], atol=2e-3)


# --- mistakes caught before the first step --------------------------------------------------------

def _untouched(model):
    return [p.detach().clone() for p in model.parameters()]


@pytest.mark.parametrize(("build", "match"), [
    (lambda: get_model("lenet5", num_classes=5), r"scores 5 classes per image but Fashion-MNIST has 10 classes"),
    (lambda: get_model("lenet5", num_classes=20), r"scores 20 classes .* num_classes=10"),
    (lambda: get_model("unet", num_classes=10, in_channels=1, base_width=4, depth=2, padding="same"),
     r"one class per image, so the model must output scores of shape \(N, 10\); it outputs \(2, 10, 28, 28\)"),
])
def test_a_model_that_does_not_fit_the_data_is_refused_before_any_work(small_fmnist, capsys, build, match):
    model = build()
    weights = _untouched(model)
    with pytest.raises(ValueError, match=match):
        train.fit(model, small_fmnist, epochs=1, device="cpu")
    assert "Training" not in capsys.readouterr().out
    assert all(torch.equal(a, b) for a, b in zip(weights, model.parameters(), strict=True))


def test_segmentation_mistakes_are_refused_before_any_work(tiny_scenes):
    with pytest.raises(ValueError, match=r"a class for every pixel .* it outputs \(2, 11\), one score per image"):
        train.fit(get_model("lenet5", num_classes=11), dataclasses.replace(
            tiny_scenes, train_x=tiny_scenes.train_x[:, :, :28, :28], test_x=tiny_scenes.test_x[:, :, :28, :28],
            train_y=tiny_scenes.train_y[:, :28, :28], test_y=tiny_scenes.test_y[:, :28, :28]), epochs=1, device="cpu")
    unet = get_model("unet", num_classes=11, in_channels=1, base_width=4, depth=2, padding="same")
    with pytest.raises(ValueError, match=r"masks are \(32, 32\) but its images are \(48, 48\)"):
        train.fit(unet, dataclasses.replace(tiny_scenes, train_y=tiny_scenes.train_y[:, :32, :32]), epochs=1,
                  device="cpu")
    with pytest.raises(ValueError, match=r"scores 3 classes per pixel but .* has 11 classes"):
        train.fit(get_model("unet", num_classes=3, in_channels=1, base_width=4, depth=2, padding="same"),
                  tiny_scenes, epochs=1, device="cpu")
    assert train.fit(unet, tiny_scenes, epochs=1, batch_size=16, loss="dice", device="cpu")["test_miou"]


def test_a_task_and_a_loss_for_fit_are_refused_together(small_fmnist):
    from cnn_book.tasks import Classification

    with pytest.raises(ValueError, match="give those to the task instead"):
        train.fit(get_model("lenet5"), small_fmnist, task=Classification(), label_smoothing=0.1, device="cpu")


def test_a_loss_that_does_not_fit_the_task_is_refused(small_fmnist):
    with pytest.raises(ValueError, match=r"loss='dice' does not fit a classification task, which takes "
                                         r"'cross_entropy'"):
        train.fit(get_model("lenet5"), small_fmnist, loss="dice", device="cpu")


@pytest.mark.parametrize(("settings_", "match"), [
    ({"epochs": 0}, "epochs must be a whole number of at least 1, got 0"),
    ({"epochs": 2.5}, "epochs must be a whole number"),
    ({"batch_size": 0}, "batch_size must be a whole number of at least 1, got 0"),
    ({"lr": 0.0}, "the learning rate must be a positive, finite number"),
    ({"optimizer": "rmsprop"}, "optimizer must be"),
])
def test_settings_that_cannot_train_are_refused(small_fmnist, settings_, match):
    with pytest.raises(ValueError, match=match):
        train.fit(get_model("lenet5"), small_fmnist, **{"epochs": 1, **settings_}, device="cpu")


def test_empty_splits_are_refused_with_a_message(small_fmnist):
    empty = dataclasses.replace(small_fmnist, test_x=small_fmnist.test_x[:0], test_y=small_fmnist.test_y[:0])
    for call in (train.evaluate, train.predict):
        with pytest.raises(ValueError, match="the test split of Fashion-MNIST is empty"):
            call(get_model("lenet5"), empty)
    with pytest.raises(ValueError, match="the test split of Fashion-MNIST is empty"):
        train.fit(get_model("lenet5"), empty, epochs=1, device="cpu")


def test_a_last_batch_of_one_image_is_merged_into_the_one_before(small_fmnist):
    sizes = [len(i) for i in batch_indices(129, 64, merge_single=True)]
    assert sizes == [64, 65] and [len(i) for i in batch_indices(129, 64)] == [64, 64, 1]
    assert [len(i) for i in batch_indices(130, 64, merge_single=True)] == [64, 64, 2]
    assert [len(i) for i in batch_indices(1, 64, merge_single=True)] == [1]
    assert [len(i) for i in batch_indices(2, 1, merge_single=True)] == [1, 1]  # batches of one stay so
    # a batch norm on a 1x1 map fails on a batch of one in training; 129 images in batches of 128
    model = nn.Sequential(nn.Conv2d(1, 8, 3), nn.AdaptiveAvgPool2d(1), nn.BatchNorm2d(8), nn.Flatten(),
                          nn.Linear(8, 10))
    data = dataclasses.replace(small_fmnist, train_x=small_fmnist.train_x[:129], train_y=small_fmnist.train_y[:129])
    with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
        model.train()(data.images("train", [0]))
    hist = train.fit(model, data, epochs=2, batch_size=128, device="cpu")
    assert hist.train_images == 2 * 129


# --- tasks: a new kind of work plugs in without touching fit ------------------------------------------

class _Brightness(Task):
    """A toy regression: predict each image's mean brightness. Loss: mean squared error."""

    name = "brightness"
    losses = ("mse",)

    def loss(self, model, output, y):
        mse = nn.functional.mse_loss(output.squeeze(1).float(), y)
        return mse, {"mse": mse}

    def score(self, output, y):
        return {"abs_error": (output.squeeze(1).float() - y).abs().sum(), "count": len(y)}

    def metrics(self, sums):
        return {"mae": sums["abs_error"].item() / sums["count"]}

    def epoch_line(self, train, test):
        return f"train MAE {train['mae']:.3f}  test MAE {test['mae']:.3f}"

    def summary_line(self, test):
        return f"test MAE {test['mae']:.3f}"


class _BrightnessData(ImageData):
    task = "brightness"


def test_a_new_task_plugs_into_fit_without_touching_it(small_fmnist, capsys):
    def brightness(x):
        return ((x.float() / 255 - small_fmnist.mean[0]) / small_fmnist.std[0]).mean((1, 2, 3))

    d = small_fmnist
    data = _BrightnessData("Fashion-MNIST brightness", ["brightness"], d.train_x, brightness(d.train_x),
                           d.test_x, brightness(d.test_x), d.mean, d.std)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 1))
    before = train.evaluate(model, data, task=_Brightness())["mae"]
    hist = train.fit(model, data, epochs=3, batch_size=64, lr=1e-2, device="cpu", task=_Brightness())
    assert hist.task == "brightness" and hist["test_mae"][-1] < 0.5 * before
    assert hist["train_mse"][-1] < hist["train_mse"][0] and len(hist.step_curves["mae"]) == len(hist.steps)
    assert "test MAE" in capsys.readouterr().out


def test_segmentation_reports_loss_parts_and_mean_iou(tiny_scenes):
    torch.manual_seed(0)
    unet = get_model("unet", num_classes=11, in_channels=1, base_width=4, depth=2, padding="same")
    hist = train.fit(unet, tiny_scenes, epochs=2, batch_size=16, loss="cross_entropy+dice", device="cpu")
    loss, ce, dice = (hist.curves[f"train_{k}"][-1] for k in ("loss", "cross_entropy", "dice"))
    assert loss == pytest.approx(ce + dice, rel=1e-5)
    # on the test set: the per-pixel cross-entropy alone (Dice would change with the batch size)
    assert "test_dice" not in hist.curves and hist["test_loss"] == hist["test_cross_entropy"]
    scores = train.segmentation_scores(unet, tiny_scenes)
    assert hist["test_miou"][-1] == pytest.approx(scores.mean_iou) and hist["test_acc"][-1] == pytest.approx(
        scores.pixel_accuracy)
    assert scores.loss == pytest.approx(hist["test_loss"][-1], rel=1e-5)
    assert train.evaluate(unet, tiny_scenes, batch_size=7)["loss"] == pytest.approx(scores.loss, rel=1e-5)


# --- plots and results ------------------------------------------------------------------------------

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
    assert fig.axes[1].get_ylabel() == "images"  # the colour bar counts the data's unit
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


def test_image_rows_draws_each_row_on_one_grey_scale():
    probs = torch.rand(5, 1, 28, 28)
    fig = plot.image_rows({"probabilities": probs, "a draw": (probs > 0.5).float()}, title="two rows")
    drawn = [ax for ax in fig.axes if ax.images]
    assert len(drawn) == 10 and fig._suptitle.get_text() == "two rows"
    assert [drawn[0].get_title(loc="left"), drawn[5].get_title(loc="left")] == ["probabilities", "a draw"]
    assert all(ax.images[0].get_clim() == (0, 1) for ax in drawn)  # 0 black, 1 white in every image
    fig = plot.image_rows([("", probs[:2]), ("", probs[2:4])])  # pairs: untitled rows
    assert len([ax for ax in fig.axes if ax.images]) == 4 and fig._suptitle is None
    with pytest.raises(ValueError, match="equally long"):
        plot.image_rows({"a": probs, "b": probs[:3]})
    with pytest.raises(ValueError, match=r"\(n, 1, H, W\)"):
        plot.image_rows({"rgb": torch.rand(2, 3, 8, 8)})
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
    with pytest.raises(ValueError, match="the summary is of SimpleCNN"):  # a summary of another model
        results.record("lenet5", "02", hist, summary(get_model("simple_cnn")))
    path.unlink()
    quick = dataclasses.replace(hist, quick=True)  # quick mode is the history's, not the environment's
    assert results.record("lenet5", "02", quick, summary(model)) is None and not path.exists()
    monkeypatch.setenv("CNN_BOOK_QUICK", "1")
    assert results.record("lenet5", "02", hist, summary(model)) == path and path.exists()


@pytest.mark.parametrize("key, chapter, message", [
    ("../outside", "02", "key must be"), ("LeNet", "02", "key must be"), ("", "02", "key must be"),
    ("lenet5", "2", "chapter must be two digits"), ("lenet5", 2, "chapter must be two digits"),
])
def test_results_refuse_keys_that_leave_the_folder_and_chapters_that_misorder(key, chapter, message, tmp_path,
                                                                               monkeypatch):
    from cnn_book import results
    from cnn_book.inspect import summary

    monkeypatch.setenv("CNN_BOOK_RESULTS", str(tmp_path))
    hist = train.History(model="LeNet5", input_shape=(1, 28, 28), epochs=[1], curves={"test_acc": [0.5]})
    with pytest.raises(ValueError, match=message):
        results.record(key, chapter, hist, summary(get_model("lenet5")))
    assert list(tmp_path.iterdir()) == []


def test_results_write_valid_json_atomically_and_name_a_damaged_file(tmp_path, monkeypatch):
    from cnn_book import results
    from cnn_book.inspect import summary

    monkeypatch.setenv("CNN_BOOK_RESULTS", str(tmp_path))
    diverged = train.History(model="LeNet5", input_shape=(1, 28, 28), epochs=[1],
                             curves={"test_acc": [float("nan")]})
    path = results.record("lenet5", "02", diverged, summary(get_model("lenet5")))
    assert json.loads(path.read_text())["test_acc"] is None  # strict JSON: null, not NaN
    assert [p.name for p in tmp_path.iterdir()] == ["lenet5.json"]  # no temporary file left
    (tmp_path / "broken.json").write_text("")  # what a writer killed mid-write used to leave
    (tmp_path / "old.json").write_text('{"chapter": 2}')
    with pytest.warns(UserWarning) as caught:
        rows = results.load_all()
    assert [r["key"] for r in rows] == ["lenet5"]
    assert sorted(Path(str(w.message).split(" is damaged")[0]).name for w in caught) == ["broken.json", "old.json"]


def test_auxiliary_losses_are_added_with_the_model_s_weight(small_fmnist, capsys):
    from cnn_book.tasks import Classification

    model = get_model("googlenet", num_classes=10, in_channels=1, small_input=True, width_mult=0.125)
    logits, aux = torch.randn(4, 10), torch.randn(4, 10)
    y = torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy
    loss, parts = Classification().loss(model, (logits, aux, None), y)
    assert torch.allclose(loss, ce(logits, y) + 0.3 * ce(aux, y)) and torch.allclose(parts["aux"], ce(aux, y))
    hist = train.fit(model, small_fmnist, epochs=1, batch_size=64, device="cpu")  # GoogLeNet trains with aux heads
    assert hist.train_images == 1024 and "test accuracy" in capsys.readouterr().out
    assert hist["train_loss"][0] == pytest.approx(hist["train_cross_entropy"][0] + 0.3 * hist["train_aux"][0], rel=1e-5)


def test_plain_sgd_at_a_constant_rate_is_what_it_says(small_fmnist, capsys, monkeypatch):
    """d2l's setting: momentum=0 and schedule="constant" give torch's SGD without momentum, at lr throughout."""
    seen = []
    real_sgd = torch.optim.SGD

    def spy(params, **kw):
        opt = real_sgd(params, **kw)
        seen.append(opt)
        return opt

    monkeypatch.setattr(torch.optim, "SGD", spy)
    model = get_model("lenet5")
    hist = train.fit(model, small_fmnist, epochs=4, batch_size=64, optimizer="sgd", momentum=0.0, lr=0.1,
                     schedule="constant", weight_decay=0.0, device="cpu")
    group = seen[0].param_groups[0]
    assert group["momentum"] == 0 and not group["nesterov"] and group["lr"] == pytest.approx(0.1)
    assert hist["train_loss"][-1] < hist["train_loss"][0]
    assert "plain sgd lr 0.1 constant" in capsys.readouterr().out
    with pytest.raises(ValueError, match="schedule must be"):
        train.fit(get_model("lenet5"), small_fmnist, epochs=1, schedule="cosine", device="cpu")


def test_fold_keeps_printed_lines_inside_the_page_column():
    done = ("Done: device cpu (2 threads) | precision fp32 | wall time 15.3 s | 4,688 train images/s | "
            "test accuracy 86.60%")
    lines = settings.fold(done).splitlines()
    assert len(lines) == 2 and all(len(line) <= 80 for line in lines)
    assert lines[0].endswith("|") and lines[1].startswith("  4,688")  # broken after a separator
    assert " ".join(line.strip() for line in lines) == done  # nothing lost
    assert settings.fold("short line") == "short line"
    words = "a b " * 60
    assert all(len(line) <= 40 for line in settings.fold(words, width=40).splitlines())
    long = ("Training AE-conv-2 on Fashion-MNIST (binarised) (60,000 train / 10,000 test images, 1x28x28) for "
            "10 epochs on cpu (2 threads) in fp32: batch 100, adamw lr 0.001 one-cycle")
    lines = settings.fold(long).splitlines()  # its first piece is longer than the column
    assert all(len(line) <= 80 for line in lines) and " ".join(line.strip() for line in lines) == long
    assert all(len(line) > 60 for line in lines[:-1])  # no word left alone on a line ("images,")


def test_a_recipe_prints_in_lines_that_fit_the_column():
    from cnn_book import recipes

    for name in recipes.RECIPES:
        for kind in ("cpu", "gpu"):
            text = str(recipes.RECIPES[name][kind])
            assert max(map(len, text.splitlines())) <= settings.COLUMN, text


def test_weight_decay_on_matrices_only_spares_biases_norms_and_what_the_model_names():
    """nanoGPT's rule for the Transformer recipes: weight decay on the tensors of two or more
    dimensions (linear and embedding weights; GPT's tied head counted once), none on biases and
    layer norms, nor on a ViT's class token and position embeddings (its no_weight_decay)."""
    from cnn_book import recipes

    gpt = get_model("gpt2", vocab_size=50, block_size=16, num_layers=2, num_heads=2, hidden_dim=32)
    groups = train.param_groups(gpt, 1e-3, weight_decay=0.1, decay="matrices")
    decayed = {id(p) for g in groups if g["weight_decay"] == 0.1 for p in g["params"]}
    for name, p in gpt.named_parameters():
        assert (id(p) in decayed) == (p.dim() >= 2), name
    assert sum(len(g["params"]) for g in groups) == len(list(gpt.parameters()))  # each once, the tied one too
    everything = train.param_groups(gpt, 1e-3, weight_decay=0.1)
    assert [g["weight_decay"] for g in everything] == [0.1]  # decay="all": one group, as before
    vit = get_model("vit", num_classes=10, in_channels=1)
    spared = {n for g in train.param_groups(vit, 1e-3, weight_decay=0.05, decay="matrices")
              if g["weight_decay"] == 0 for n, p in vit.named_parameters() if any(p is q for q in g["params"])}
    assert {"class_token", "encoder.pos_embedding", "conv_proj.bias", "encoder.ln.weight"} <= spared
    assert "conv_proj.weight" not in spared and "heads.head.weight" not in spared
    for name in ("vit", "gpt_char", "transformer_reverse"):  # BERT's recipes: with chapter 15's next run
        assert recipes.RECIPES[name]["cpu"].decay == recipes.RECIPES[name]["gpu"].decay == "matrices"
    # fit builds its optimiser from these groups: a scale on one part keeps both kinds of group
    groups = train.param_groups(gpt, 1e-3, {"transformer.h": 0.1}, weight_decay=0.1, decay="matrices")
    assert sorted((g["lr"], g["weight_decay"]) for g in groups) == [(1e-4, 0.0), (1e-4, 0.1), (1e-3, 0.0),
                                                                  (1e-3, 0.1)]
    with pytest.raises(ValueError, match="decay must be 'all' or 'matrices'"):
        train.param_groups(gpt, 1e-3, decay="some")


def test_the_schedules_fit_uses_and_the_transformer_paper_s():
    from cnn_book import schedules

    rates = schedules.learning_rates("one-cycle", 1e-3, 100)
    assert len(rates) == 100 and rates[0] == pytest.approx(1e-3 / 25)  # OneCycleLR's start: lr / 25
    assert max(rates) == pytest.approx(1e-3) and 25 <= rates.index(max(rates)) <= 35  # the peak at 30 %
    assert rates[-1] < 1e-5  # annealed to almost 0
    assert schedules.learning_rates("constant", 1e-3, 5) == [1e-3] * 5
    paper = [schedules.transformer_rate(s) for s in range(1, 20_001)]
    assert paper.index(max(paper)) == 3999  # step 4000: the end of the warm-up
    assert max(paper) == pytest.approx(schedules.peak_transformer_rate()) == pytest.approx((512 * 4000) ** -0.5)
    assert paper[-1] == pytest.approx(512 ** -0.5 * 20_000 ** -0.5)  # then the inverse square root of the step
    with pytest.raises(ValueError, match="schedule must be one of 'one-cycle', 'warmup-linear', 'constant'"):
        schedules.learning_rates("cosine", 1e-3, 10)


def test_bert_s_schedule_warms_up_over_6_percent_then_decays_linearly_to_0():
    from cnn_book import schedules

    rates = schedules.learning_rates("warmup-linear", 1.0, 100)
    assert rates[:6] == pytest.approx([1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1.0])  # 6 % of 100 steps
    assert rates[6:] == pytest.approx([(100 - s) / 94 for s in range(6, 100)])  # linear, to 1/94 at the last
    assert all(a > b for a, b in zip(rates[6:], rates[7:], strict=False))
    assert schedules.learning_rates("warmup-linear", 1.0, 1) == [1.0]  # one step: no division by zero


def test_adamw_takes_the_recipe_s_betas_and_eps():
    from cnn_book import optim

    opt = optim.make_optimizer("adamw", [torch.zeros(2, requires_grad=True)], 1e-3, 0.01, 0.9, (0.9, 0.98), 1e-6)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-6
    assert optim.make_optimizer("adamw", [torch.zeros(2, requires_grad=True)], 1e-3, 0.0, 0.9).defaults["betas"] == (
        0.9, 0.999)


def test_held_out_loss_every_few_steps_and_the_best_weights_kept(small_fmnist, capsys):
    """nanoGPT's estimate_loss and best checkpoint, through fit: the held-out loss every 4 steps,
    printed and kept in the history, and the model left with the weights of the best evaluation."""
    torch.manual_seed(0)
    model = get_model("lenet5")
    hist = train.fit(model, small_fmnist, epochs=2, batch_size=64, lr=3e-3, device="cpu", eval_every=4,
                     eval_limit=128, keep_best=True)
    steps = 2 * math.ceil(1024 / 64)
    assert hist.eval_steps == list(range(4, steps + 1, 4)) and len(hist.eval_loss) == len(hist.eval_steps)
    best = hist.eval_steps[hist.eval_loss.index(min(hist.eval_loss))]
    assert hist.best_step == best
    again = train.evaluate(model, small_fmnist, limit=128)["loss"]
    assert again == pytest.approx(min(hist.eval_loss), rel=1e-5)  # the kept weights are the best ones
    out = capsys.readouterr().out
    assert f"kept the weights of step {best}" in out and out.count("held-out loss") >= len(hist.eval_steps)
    with pytest.raises(ValueError, match="keep_best=True keeps the best"):
        train.fit(get_model("lenet5"), small_fmnist, epochs=1, device="cpu", keep_best=True)
