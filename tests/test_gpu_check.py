"""`make gpu-check`'s code, run on the CPU for two recipes (the GPU recipes at their real size, two
steps each): what it prints and writes, and that without CUDA it says so and fails."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "gpu_check.py"


def _run(*args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "CNN_BOOK_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, str(TOOL), *args], env=env, capture_output=True, text=True, timeout=600)


def test_the_gpu_check_runs_its_recipes_on_a_cpu(tmp_path):
    out = tmp_path / "gpu_check.json"
    run = _run("--device", "cpu", "--steps", "2", "--recipe", "lenet5", "--recipe", "gpt_char",
               "--test-items", "64", "--out", str(out))
    assert run.returncode == 0, run.stderr[-3000:]
    got = json.loads(out.read_text())
    assert [r["recipe"] for r in got["recipes"]] == ["lenet5", "gpt_char"] and got["steps"] == 2
    lenet, gpt = got["recipes"]
    for r in got["recipes"]:
        assert r["device"].startswith("cpu") and r["precision"] == "fp32" and r["steps"] == 2
        assert r["items_per_s"] > 0 and r["peak_gpu_mib"] is None and r["skipped_steps"] == 0
        assert r["loss_fell"] == (r["loss_end"] < r["loss_start"])
    assert lenet["unit"] == "images" and lenet["batch_size"] == 128 and lenet["tokens_per_s"] is None
    # the GPU recipe at its real size: nanoGPT's shakespeare_char (256 characters, batch 64)
    assert gpt["unit"] == "sequences" and gpt["input"] == [256] and gpt["batch_size"] == 64
    assert abs(gpt["tokens_per_s"] - gpt["items_per_s"] * 256) < 13  # items/s is rounded to 0.1
    assert "lenet5" in run.stdout and "gpt_char" in run.stdout and "Written to" in run.stdout


def test_without_cuda_the_gpu_check_says_so_and_fails():
    if torch.cuda.is_available():
        return  # on a GPU machine the check itself is what runs
    run = _run("--recipe", "lenet5")
    assert run.returncode != 0 and "No CUDA device here" in run.stderr and "--device cpu" in run.stderr


def test_the_budget_s_plan_is_printed_from_the_recipes_flops():
    run = _run("--plan", "--recipe", "lenet5", "--recipe", "alexnet", "--steps", "60")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "lenet5" in run.stdout and "alexnet" in run.stdout and "TFLOP for 60 steps" in run.stdout
