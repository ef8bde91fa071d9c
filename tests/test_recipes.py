"""Recipes as data: every chapter reads its settings from cnn_book.recipes, and every GPU recipe
takes a real training step at its real size on the CPU, so a Colab reader never meets a mistake
that a CPU already shows."""

import ctypes
import json
import math
import os
import re
import traceback
from pathlib import Path

import pytest
import torch
from torch import nn

from cnn_book import recipes, train
from cnn_book.tasks import get_task

ROOT = Path(__file__).resolve().parents[1]
GPU = {name: row["gpu"] for name, row in recipes.RECIPES.items()}


def _status(field: str) -> int:
    with open("/proc/self/status") as f:
        return int(re.search(rf"^{field}:\s+(\d+) kB", f.read(), re.M).group(1)) * 1024


def _in_child(fn) -> tuple[float, int]:
    """Run ``fn`` in a forked child; return its result and the child's peak resident memory while
    it ran, above what it started with, in bytes: the child hands freed heap back to the system
    (``malloc_trim``), resets its high-water mark (``/proc/self/clear_refs``), then runs ``fn``."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: one step, then its answer down the pipe
        code = 1
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")  # VmHWM := VmRSS
            start = _status("VmRSS")
            result = fn()
            os.write(w, json.dumps([result, _status("VmHWM") - start]).encode())
            code = 0
        except BaseException:
            os.write(w, json.dumps(traceback.format_exc()).encode())
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as pipe:
        answer = pipe.read()
    _, status = os.waitpid(pid, 0)
    assert answer, "the child died without a word"
    assert status == 0, json.loads(answer)  # the child's traceback
    return tuple(json.loads(answer))


def test_every_run_has_a_cpu_and_a_gpu_recipe_that_fit_its_task():
    for name, row in recipes.RECIPES.items():
        assert set(row) == {"cpu", "gpu"}, name
        for recipe in row.values():
            get_task(recipe.task, loss=recipe.loss)  # the loss fits the task
            assert recipe.optimizer in ("sgd", "adamw") and recipe.epochs >= 1 and recipe.batch_size >= 2
            assert recipe.lr > 0 and len(recipe.input_shape) == (1 if recipe.data in recipes.TEXT else 3)
            assert str(recipe).startswith(recipe.model)
    assert recipes.get("alexnet", "cuda").input_shape == (1, 224, 224)
    assert recipes.get("alexnet", "cpu").options["width_mult"] == recipes.get("alexnet", "mps").options["width_mult"]
    assert recipes.get("alexnet", "cuda").options["width_mult"] == 1.0
    assert recipes.get("vgg11_bn", "cpu").input_shape == (1, 32, 32)  # padded by 2
    assert recipes.get("simple_cnn") is recipes.RECIPES["simple_cnn"]["cpu"]  # no GPU here
    with pytest.raises(ValueError, match="no recipe named 'alexnett'"):
        recipes.get("alexnett")


def test_a_recipe_prepares_its_data_and_builds_its_model(small_fmnist):
    r = recipes.get("resnet_cifar", "cpu")
    data = r.prepare(small_fmnist)
    assert data.input_shape == (1, 14, 14) and len(data.train_x) == min(1024, r.train_images)
    sweep = recipes.get("mobilenet_v1_sweep", "cpu")
    assert sweep.build(alpha=0.25).name != sweep.build().name  # a chapter's sweep overrides an option
    assert set(r.fit_args) <= set(train.fit.__code__.co_varnames)


@pytest.mark.parametrize("name", list(GPU))
def test_every_gpu_recipe_takes_a_training_step_at_its_real_size_on_the_cpu(name, record_property):
    recipe = GPU[name]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a forked child does not inherit OpenMP's thread pool safely
    try:
        loss, peak = _in_child(lambda: recipes.one_step(recipe, batch_size=2))
    finally:
        torch.set_num_threads(threads)
    # a class per image or pixel: cross-entropy near log(classes); a VAE: nats per image, near 784 log 2 untrained
    # a token: cross-entropy near log(vocabulary)
    assert math.isfinite(loss) and 0 < loss < (2 * 784 if recipe.task == "generative" else 20)
    record_property("peak_bytes", peak)
    print(f"{name}: one step at batch 2, {recipe.input_shape}: loss {loss:.3f}, peak {peak / 2**20:,.0f} MiB")
    assert peak < 6 * 2**30, "one step at batch 2 should never need 6 GiB"


def test_the_chapters_take_their_settings_from_the_recipes():
    sources = {}
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = json.loads(path.read_text())
        sources[path.stem] = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code")
    used = {m for src in sources.values() for m in re.findall(r'recipes\.get\("(\w+)"\)', src)}
    assert used == set(recipes.RECIPES), "every recipe is used by a chapter, and every chapter's run has one"
    for stem, src in sources.items():
        for call in re.findall(r"train\.fit\((.*?)\)\n", src, flags=re.S):
            assert "fit_args" in call and not re.search(r"\b(lr|epochs|optimizer)=", call), (stem, call)


def test_d2l_s_lenet_recipe_is_d2l_s_setting():
    r = recipes.get("lenet5_d2l", "cpu")
    assert (r.optimizer, r.momentum, r.schedule, r.lr, r.batch_size, r.epochs, r.weight_decay, r.augment) == (
        "sgd", 0.0, "constant", 0.9, 256, 10, 0.0, False)
    torch.manual_seed(0)
    model = r.build()
    assert isinstance(model.features[1], nn.Sigmoid) and isinstance(model.features[2], nn.AvgPool2d)
    # Xavier-uniform: every weight within the bound sqrt(6 / (fan_in + fan_out))
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(m.weight)
            bound = math.sqrt(6 / (fan_in + fan_out))
            assert m.weight.abs().max() <= bound and m.weight.abs().max() > 0.8 * bound
    assert "plain sgd lr 0.9 constant" in str(r) and "xavier_uniform init" in str(r)


@pytest.mark.parametrize("kind", ["cpu", "gpu"])
def test_alexnet_keeps_the_paper_s_geometry_on_every_device(kind):
    """Chapter 3 trains AlexNet, not a coarser network: at the recipe's input, pool5 is the paper's
    6x6 map (at 64x64 it was 1x1, and the adaptive pool copied that one position 36 times)."""
    recipe = recipes.RECIPES["alexnet"][kind]
    with torch.device("meta"):
        model = recipe.build()
        pool5 = model.features(torch.zeros(2, *recipe.input_shape))
    assert recipe.input_shape == (1, 224, 224)
    assert tuple(pool5.shape[2:]) == (6, 6)
    assert model.classifier[1].in_features == pool5.shape[1] * 36  # fc6 reads the 36 positions as they are
    if kind == "cpu":  # a quarter of the kernels, fc6 and fc7 of 1,024: the size the CPU trains in minutes
        assert [m.out_channels for m in model.features if isinstance(m, nn.Conv2d)] == [16, 48, 96, 64, 64]
        assert model.classifier[1].out_features == 1024
