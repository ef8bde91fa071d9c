"""The surfaces added since the last hostile pass, used as a careless or unlucky reader would: the
command line, training settings, a diverging run, detection boxes, text models, the VAE's
likelihood, first use by many processes, a half-started torchrun job, Grad-CAM and the helpers.
Each case asserts what happens (the message, and that nothing was lost or done), not only that
something is raised."""

import dataclasses
import json
import math
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from cnn_book import cli, recipes, train, transfer
from cnn_book.data import ImageData, encode
from cnn_book.models import get_model
from cnn_book.tasks import Detection

ROOT = Path(__file__).resolve().parents[1]


def _tiny(small_fmnist, n: int = 256) -> ImageData:
    d = small_fmnist
    return ImageData(d.name, d.classes, d.train_x[:n], d.train_y[:n], d.test_x[:n], d.test_y[:n], d.mean, d.std)


# --- 1. the command line never loses work ------------------------------------------------------

def test_out_that_is_a_file_is_refused_before_any_training(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(recipes, "load_data", lambda recipe: pytest.fail("no data is loaded before --out is checked"))
    taken = tmp_path / "taken"
    taken.write_text("a file of the reader's")
    with pytest.raises(SystemExit) as exit_:
        cli.main(["--recipe", "lenet5", "--out", str(taken)])
    assert exit_.value.code == 2 and "is a file, not a folder" in capsys.readouterr().err
    assert taken.read_text() == "a file of the reader's"


@pytest.mark.parametrize("args, message", [
    (["--train-images", "-5"], "--train-images must be at least 1, got -5"),
    (["--train-images", "0"], "--train-images must be at least 1, got 0"),
    (["--epochs", "0"], "--epochs must be at least 1"),
    (["--lr", "inf"], "--lr must be a positive, finite number"),
])
def test_the_command_line_refuses_nonsense_before_any_work(args, message, monkeypatch, capsys):
    monkeypatch.setattr(recipes, "load_data", lambda recipe: pytest.fail("refused before the data is loaded"))
    with pytest.raises(SystemExit):
        cli.main(["--recipe", "lenet5", *args])
    assert message in capsys.readouterr().err


def test_a_failed_save_leaves_the_previous_files_intact(tmp_path, monkeypatch, small_fmnist):
    torch.manual_seed(0)
    model = get_model("lenet5")
    hist = train.fit(model, _tiny(small_fmnist), epochs=1, device="cpu")
    cli.save(hist, model, tmp_path)
    good = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert set(good) == {"history.json", "model.pt"}

    def full_disk(obj, f, *args, **kwargs):
        f.write(b"half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(OSError, match="No space left"):
        cli.save(hist, model, tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == good  # no half file, no temporary one


def test_history_json_is_strict_json_when_a_figure_is_nan(tmp_path, small_fmnist):
    torch.manual_seed(0)
    model = get_model("lenet5")
    hist = train.fit(model, _tiny(small_fmnist), epochs=1, device="cpu")
    hist.curves["test_acc"][-1] = math.nan  # as a diverged run leaves it
    cli.save(hist, model, tmp_path)

    def refuse(constant):
        raise ValueError(f"not strict JSON: {constant}")

    saved = json.loads((tmp_path / "history.json").read_text(), parse_constant=refuse)
    assert saved["test_acc"][-1] is None and saved["final_test_acc"] is None


# --- 2. training refuses nonsense, and stops when the loss stops being a number -------------------

@pytest.mark.parametrize("settings, message", [
    ({"grad_clip": -1.0}, "grad_clip is the largest norm"),
    ({"grad_clip": 0.0}, "grad_clip is the largest norm"),
    ({"lr": math.inf}, "the learning rate must be a positive, finite number, got lr=inf"),
    ({"label_smoothing": 1.0}, "label_smoothing is the share of the target"),
    ({"label_smoothing": -0.1}, "label_smoothing is the share of the target"),
])
def test_fit_refuses_settings_that_cannot_train_before_the_first_step(settings, message, small_fmnist):
    model = get_model("lenet5")
    before = [p.detach().clone() for p in model.parameters()]
    with pytest.raises(ValueError, match=message):
        train.fit(model, _tiny(small_fmnist), epochs=1, device="cpu", **settings)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))  # not a step taken


def test_fit_stops_when_the_loss_becomes_nan_and_says_where_and_what_to_try(small_fmnist, capsys):
    torch.manual_seed(0)
    hist = train.fit(get_model("lenet5"), _tiny(small_fmnist, 1024), epochs=5, batch_size=32, optimizer="sgd",
                     momentum=0.0, schedule="constant", lr=1e6, log_every=4, device="cpu")
    out = capsys.readouterr().out
    found = re.search(r"Stopped at step (\d+): the loss became (NaN|infinite), and more steps would spread it.\n"
                      r"Try a lower learning rate \(lr=1e\+06 now\) or clipping \(grad_clip=1.0\)\.\n", out)
    assert found and 1 <= int(found.group(1)) <= 32 and hist.stopped == found.group(0).strip()
    assert len(hist.epochs) == 1 and not math.isfinite(hist["train_loss"][-1])  # stopped: not 5 epochs
    assert out.index("Stopped at step") < out.index("Done:")


# --- 3. options that were ignored are honoured or refused ------------------------------------------

@pytest.mark.parametrize("name", ["gpt_char", "bert_finetune"])
def test_train_images_holds_for_the_text_recipes(name):
    data = recipes.load_data(dataclasses.replace(recipes.get(name, "cpu"), train_images=100))
    assert len(data.train_x) == len(data.train_y) == 100 and len(data.test_x) > 100


def test_freeze_and_unfreeze_refuse_a_prefix_that_names_nothing():
    with torch.device("meta"):
        model = get_model("mobilenet_v2", num_classes=10)
    for fn in (transfer.freeze, transfer.unfreeze):
        with pytest.raises(ValueError, match="'featurs' names no part of MobileNetV2; its top-level parts are "
                                             "features, avgpool, classifier"):
            fn(model, "featurs")
    assert transfer.trainable(model) == sum(p.numel() for p in model.parameters())  # nothing was frozen


def test_freeze_stops_1d_batch_norms_and_unfreeze_gives_each_its_own_momentum():
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8, momentum=0.01), nn.Linear(8, 2))
    model[1].running_mean.fill_(0.5)
    transfer.freeze(model, "0", "1")
    model.train()
    model(torch.randn(16, 4) * 10)  # a training-mode batch
    assert torch.equal(model[1].running_mean, torch.full((8,), 0.5))  # the statistics did not move
    assert not model[1].weight.requires_grad and model[2].weight.requires_grad
    transfer.unfreeze(model)
    assert isinstance(model[1], nn.BatchNorm1d) and model[1].momentum == 0.01
    with torch.device("meta"):
        b5 = get_model("efficientnet_b5")
    momenta = {type(m).__name__: m.momentum for m in b5.modules() if isinstance(m, nn.BatchNorm2d)}
    transfer.freeze(b5, "features")
    transfer.unfreeze(b5, "features")
    assert momenta == {"BatchNorm2d": 0.01} and all(
        m.momentum == 0.01 for m in b5.modules() if isinstance(m, nn.BatchNorm2d))


# --- 4. detection scores only real boxes ----------------------------------------------------------

def test_detections_with_a_nan_box_are_dropped_and_score_nothing():
    from cnn_book.models import yolo

    target, _ = encode(torch.tensor([[10.0, 10.0, 60.0, 70.0]]), torch.tensor([1]), 112, 7, 2, 3)
    grid = target.clone()
    grid[..., [0, 5]] = math.nan  # both predictors' x (each cell: 2 x (x, y, w, h, conf), then classes)
    dets = yolo.detections(grid, 112, 2)
    assert len(dets["boxes"]) == 0 or torch.isfinite(dets["boxes"]).all()
    metric = yolo.coco_map()
    metric.update([dets], [yolo.truths(target, 112, 2)])
    assert float(metric.compute()["map_50"]) == 0.0  # pycocotools would give 1.0 to the NaN box
    assert yolo.average_precision([dets], [yolo.truths(target, 112, 2)], 1) == 0.0


def test_map_of_a_set_with_no_boxes_is_undefined_not_minus_one():
    task = Detection()
    grids = torch.zeros(2, 7, 7, 13)  # no box predicted, none there
    scores = task.metrics(task.score(grids, grids))
    assert math.isnan(scores["map"]) and math.isnan(scores["map50"])
    assert "undefined (no boxes)" in task.summary_line(scores)


def test_encode_refuses_a_nan_box_and_float_labels():
    with pytest.raises(ValueError, match="box 0 has a coordinate that is NaN or infinite"):
        encode(torch.tensor([[math.nan, 1.0, 5.0, 5.0]]), torch.tensor([0]), 112)
    with pytest.raises(ValueError, match=r"labels must be whole class numbers \(int64\), got torch.float32"):
        encode(torch.tensor([[1.0, 1.0, 5.0, 5.0]]), torch.tensor([0.0]), 112)


# --- 5. text models name their limits -----------------------------------------------------------

@pytest.mark.parametrize("name", ["gpt2", "bert", "bert_classifier"])
@pytest.mark.parametrize("bad", [64, -1])
def test_token_ids_outside_the_vocabulary_name_vocab_size(name, bad):
    model = get_model(name, vocab_size=64, **({"block_size": 16} if name == "gpt2" else {"max_len": 16}),
                      num_layers=1, num_heads=2, hidden_dim=16, **({} if name == "gpt2" else {"mlp_dim": 32}))
    ids = torch.tensor([[1, 2, bad]])
    with pytest.raises(ValueError, match=rf"a vocabulary of 64 tokens \(vocab_size\), ids 0 to 63; got ids from "
                                         rf"{min(bad, 1)} to {max(bad, 2)}"):
        model(ids)


def test_bert_names_max_len_and_stays_finite_on_all_padding():
    model = get_model("bert", vocab_size=32, max_len=8, num_layers=1, num_heads=2, hidden_dim=16, mlp_dim=32)
    with pytest.raises(ValueError, match=r"BERT has positions for 8 tokens \(its max_len\); got 9"):
        model(torch.ones(1, 9, dtype=torch.long))
    model.eval()
    with torch.no_grad():
        padding = model(torch.zeros(2, 8, dtype=torch.long))  # every token is [PAD]
        zero_mask = model(torch.ones(2, 8, dtype=torch.long), attention_mask=torch.zeros(2, 8, dtype=torch.long))
        mixed = model(torch.tensor([[0] * 8, [5, 6, 7, 0, 0, 0, 0, 0]]))
    assert torch.isfinite(padding).all() and torch.isfinite(zero_mask).all() and torch.isfinite(mixed).all()
    with torch.no_grad():  # the all-padding row does not change the other's outputs
        alone = model(torch.tensor([[5, 6, 7, 0, 0, 0, 0, 0]]))
    assert torch.allclose(alone[0], mixed[1], atol=1e-5)


@pytest.mark.parametrize("kwargs, message", [
    ({"top_k": 0}, "top_k must be None"),
    ({"top_k": -3}, "top_k must be None"),
    ({"temperature": math.nan}, "temperature must be 0"),
    ({"temperature": -1.0}, "temperature must be 0"),
    ({"max_new_tokens": -1}, "max_new_tokens must be a whole number of at least 0"),
])
def test_sampling_refuses_settings_it_cannot_use(kwargs, message):
    from cnn_book.models.gpt import sample_next

    model = get_model("gpt2", vocab_size=16, block_size=8, num_layers=1, num_heads=2, hidden_dim=16)
    with pytest.raises(ValueError, match=message):
        model.generate(torch.zeros(1, 2, dtype=torch.long), **{"max_new_tokens": 3, **kwargs})
    if "max_new_tokens" not in kwargs:
        with pytest.raises(ValueError, match=message):
            sample_next(torch.zeros(1, 16), **kwargs)


def test_generate_refuses_an_empty_prompt_and_continues_a_real_one():
    model = get_model("gpt2", vocab_size=16, block_size=8, num_layers=1, num_heads=2, hidden_dim=16)
    with pytest.raises(ValueError, match="at least one token"):
        model.generate(torch.zeros(1, 0, dtype=torch.long), 3)
    assert model.generate(torch.zeros(1, 2, dtype=torch.long), 0).shape == (1, 2)
    assert model.generate(torch.zeros(1, 2, dtype=torch.long), 3).shape == (1, 5)


# --- 6. the VAE's likelihood refuses what it cannot score -----------------------------------------

def test_the_bernoulli_terms_refuse_pixels_outside_0_1():
    from cnn_book.models.vae import iwae_bound, log_likelihood, negative_elbo, reconstruction_nll

    torch.manual_seed(0)
    model = get_model("vae", latent_size=2).eval()
    x = torch.rand(3, 1, 28, 28)
    normalised = (x - 0.28) / 0.35
    out = model(x)
    message = r"pixels in \[0, 1\]; these range from -0\.7\d* to 2\.\d+"
    with pytest.raises(ValueError, match=message):
        reconstruction_nll(out.logits, normalised)
    with pytest.raises(ValueError, match=message):
        negative_elbo(out, normalised)
    with pytest.raises(ValueError, match=message):
        log_likelihood(model, normalised, k=2)
    assert torch.isfinite(reconstruction_nll(out.logits, x)).all()
    log_w = torch.randn(5, 3)
    for k in (0, 6):
        with pytest.raises(ValueError, match="k must be a whole number from 1 to the 5 samples given"):
            iwae_bound(log_w, k)
    assert torch.allclose(iwae_bound(log_w, 5), iwae_bound(log_w))


# --- 7. many processes filling the cache at once ------------------------------------------------

@pytest.mark.skipif(not Path("/usr/bin/bible").exists() and not any(
    (Path(p) / "bible").exists() for p in os.environ.get("PATH", "").split(":")), reason="needs Debian's bible-kjv")
def test_many_processes_reading_the_bible_for_the_first_time_all_succeed(tmp_path):
    """What torchrun --nproc-per-node N -m cnn_book.train --recipe gpt_char does on a fresh machine."""
    env = {**os.environ, "CNN_BOOK_CACHE": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    code = "from cnn_book.text import kjv_text; print(len(kjv_text()))"
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(6)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 6, [err[-500:] for _, err in results if err]
    assert len({out for out, _ in results}) == 1
    assert [p.name for p in (tmp_path / "cache" / "kjv").iterdir()] == ["kjv.txt"]  # no temporary file left


# --- 8. a half-started torchrun job gives up -----------------------------------------------------

def test_a_missing_second_process_times_out_with_what_it_waited_for():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(port), "CNN_BOOK_DIST_TIMEOUT": "3", "PYTHONPATH": str(ROOT)}
    t0 = time.perf_counter()
    run = subprocess.run([sys.executable, "-c", "from cnn_book.distributed import Group; Group.start('cpu')"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and time.perf_counter() - t0 < 60
    assert "process 0 of WORLD_SIZE=2 waited 3 s for the others at 127.0.0.1:" in run.stderr
    assert "CNN_BOOK_DIST_TIMEOUT" in run.stderr and "torchrun" in run.stderr


def test_the_wait_is_a_setting_that_names_itself(monkeypatch):
    from cnn_book.settings import dist_timeout

    assert dist_timeout() == 300
    for bad in ("nan", "inf", "-1", "soon"):
        monkeypatch.setenv("CNN_BOOK_DIST_TIMEOUT", bad)
        with pytest.raises(ValueError, match="CNN_BOOK_DIST_TIMEOUT"):
            dist_timeout()


# --- 9. Grad-CAM and the helpers under the chapters' own uses -------------------------------------

def test_grad_cam_works_on_a_frozen_network_and_names_a_wrong_layer():
    torch.manual_seed(0)
    model = get_model("simple_cnn")
    transfer.freeze(model, "features")  # a linear probe: no parameter of the features needs a gradient
    image = torch.randn(1, 1, 28, 28)
    cam, target = transfer.grad_cam(model, image, model.features[3])
    assert cam.shape[-2:] == (14, 14) and 0 <= cam.min() and cam.max() <= 1 and 0 <= target < 10
    named, _ = transfer.grad_cam(model, image, "features.3")
    assert torch.equal(named, cam)
    with pytest.raises(ValueError, match="is not a part of this SimpleCNN"):
        transfer.grad_cam(model, image, nn.Conv2d(1, 1, 3))
    with pytest.raises(ValueError, match="SimpleCNN has no layer named 'features.99'"):
        transfer.grad_cam(model, image, "features.99")
    with pytest.raises(ValueError, match=r"Grad-CAM weighs a layer's maps \(N, C, H, W\); this Linear outputs"):
        transfer.grad_cam(model, image, model.classifier[-1])


def test_a_model_that_returns_a_dict_is_told_what_fit_expects(small_fmnist):
    class Library(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = get_model("lenet5")

        def forward(self, x):
            return {"logits": self.net(x)}

    with pytest.raises(ValueError, match=r"fit expects the model to return its scores as a tensor .* returns a "
                                         r"dict with keys 'logits'"):
        train.fit(Library(), _tiny(small_fmnist), epochs=1, device="cpu")


def test_counts_below_one_are_refused(small_fmnist, tmp_path, monkeypatch):
    data, model = _tiny(small_fmnist), get_model("lenet5")
    for fn in (train.evaluate, train.predict):
        with pytest.raises(ValueError, match="limit is how many test items to use"):
            fn(model, data, limit=-1)
    with pytest.raises(ValueError, match="n, the training images of each class"):
        transfer.per_class(data, -1)
    empty = (torch.zeros(0, 4), torch.zeros(0, dtype=torch.long))
    with pytest.raises(ValueError, match="linear_probe needs training features"):
        transfer.linear_probe(empty, (torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)), 2)
    with pytest.raises(ValueError, match="linear_probe needs test features"):
        transfer.linear_probe((torch.zeros(3, 4), torch.zeros(3, dtype=torch.long)), empty, 2)


def test_results_into_a_missing_folder_is_an_error_and_timeouts_name_their_variable(small_fmnist, tmp_path,
                                                                                    monkeypatch):
    from cnn_book import inspect, results
    from cnn_book.files import timeout

    model = get_model("lenet5")
    hist = train.fit(model, _tiny(small_fmnist), epochs=1, device="cpu")
    monkeypatch.setenv("CNN_BOOK_RESULTS", str(tmp_path / "no-such-folder"))
    with pytest.raises(ValueError, match="CNN_BOOK_RESULTS=.*no-such-folder is not a folder"):
        results.record("lenet5", "02", hist, inspect.summary(model))
    monkeypatch.delenv("CNN_BOOK_RESULTS")
    for bad in ("nan", "inf", "-inf"):
        monkeypatch.setenv("CNN_BOOK_TIMEOUT", bad)
        with pytest.raises(ValueError, match="CNN_BOOK_TIMEOUT must be a positive, finite number of seconds"):
            timeout()
