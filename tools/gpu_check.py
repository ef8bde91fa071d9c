"""Every GPU recipe on a GPU, in a few minutes: what a maintainer runs when a GPU is lent for a while.

    make gpu-check                     # every GPU recipe of cnn_book.recipes on CUDA, ~10 minutes
    python tools/gpu_check.py --device cpu --steps 2 --recipe lenet5 --recipe gpt_char   # the same code on a CPU

Each recipe trains through ``cnn_book.train.fit`` (what a Colab reader runs) in the precision the
device gets (``precision_for``: fp16 with a GradScaler below compute capability 8.0, bf16 from
8.0, fp32 on a CPU), at its real size and batch, on the first ``steps x batch`` training items of its
own data, one epoch, and is scored on ``--test-items`` held-out items. For each it prints, and
writes to ``benchmarks/gpu_check.json``: the device and precision, items (images, or sequences and
tokens) per second, the peak GPU memory, the mean loss of the first and of the last tenth of the
steps, how many fp16 steps the GradScaler skipped, and whether the loss fell.

How the budget was sized (not measured: this project's machines have no GPU): ``--plan`` prints
each recipe's training FLOPs for the budget (``recipes.train_flops``, 3x the forward pass) and the
seconds they take at ``--tflops`` (default 8, a T4's fp16 throughput on small models is about a
tenth of its 65 TFLOP/s peak); with the default 60 steps the sum is a few minutes, and building the
data sets and scoring the held-out items (on the CPU and the GPU) adds about as much again.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import io
import json
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnn_book import recipes  # noqa: E402
from cnn_book.device import describe_device, precision_for  # noqa: E402
from cnn_book.train import fit  # noqa: E402

OUT = ROOT / "benchmarks" / "gpu_check.json"


def _first(data, n_train: int, n_test: int):
    """``data`` with its first ``n_train`` training and ``n_test`` test items (tensors and lists alike)."""
    changes = {}
    for f in dataclasses.fields(data):
        v = getattr(data, f.name)
        if f.name.startswith(("train_", "test_")) and isinstance(v, torch.Tensor | list):
            changes[f.name] = v[: n_train if f.name.startswith("train_") else n_test]
    return dataclasses.replace(data, **changes)


def check(name: str, device: torch.device, steps: int, test_items: int) -> dict:
    """Train recipe ``name``'s GPU form for ``steps`` steps on ``device``; return what it measured."""
    recipe = recipes.RECIPES[name]["gpu"]
    items = steps * recipe.batch_size
    recipe = dataclasses.replace(recipe, epochs=1, train_images=items, log_every=max(1, steps // 10))
    t0 = time.perf_counter()
    data = _first(recipes.load_data(recipe), items, test_items)
    prepare = time.perf_counter() - t0
    torch.manual_seed(0)
    model = recipe.build()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        hist = fit(model, data, device=device, progress=False, **recipe.fit_args)
    losses = hist.step_curves["loss"]
    tokens = recipe.input_shape[0] if recipe.data in recipes.TEXT else None
    return {
        "recipe": name, "device": hist.device, "precision": hist.precision, "steps": hist.steps[-1],
        "batch_size": recipe.batch_size, "input": list(recipe.input_shape), "unit": data.unit,
        "items_per_s": round(hist.images_per_s, 1),
        "tokens_per_s": round(hist.images_per_s * tokens, 1) if tokens else None,
        "peak_gpu_mib": round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if device.type == "cuda" else None,
        "loss_start": losses[0], "loss_end": losses[-1], "skipped_steps": hist.skipped_steps,
        "loss_fell": losses[-1] < losses[0], "train_seconds": round(hist.train_seconds, 2),
        "wall_seconds": round(hist.wall_seconds, 2), "data_seconds": round(prepare, 2),
        "summary": out.getvalue().strip().splitlines()[-1],
    }


def plan(names: list[str], steps: int, tflops: float) -> float:
    """Print each recipe's training FLOPs for ``steps`` steps and the seconds they take at ``tflops``."""
    total = 0.0
    for name in names:
        r = dataclasses.replace(recipes.RECIPES[name]["gpu"], train_images=None)
        flops = recipes.train_flops(r) / r.images_per_epoch * steps * r.batch_size
        total += flops / (tflops * 1e12)
        print(f"  {name:24} {flops / 1e12:8.2f} TFLOP for {steps} steps of {r.batch_size}: "
              f"{flops / (tflops * 1e12):6.1f} s at {tflops:g} TFLOP/s")
    print(f"  all {len(names)} recipes: {total:.0f} s of training at {tflops:g} TFLOP/s")
    return total


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (the default), or cpu to run the same code on a CPU")
    ap.add_argument("--recipe", action="append", choices=list(recipes.RECIPES), metavar="NAME",
                    help="a recipe to check (repeatable); all of them when none is named")
    ap.add_argument("--steps", type=int, default=60, help="training steps per recipe (default 60)")
    ap.add_argument("--test-items", type=int, default=512, help="held-out items scored per recipe")
    ap.add_argument("--out", default=str(OUT), help="where the JSON goes")
    ap.add_argument("--plan", action="store_true", help="print the FLOPs of the budget and stop")
    ap.add_argument("--tflops", type=float, default=8.0, help="the throughput --plan assumes")
    args = ap.parse_args(argv)
    names = args.recipe or list(recipes.RECIPES)
    if args.steps < 1:
        ap.error(f"--steps must be at least 1, got {args.steps}")
    if args.plan:
        plan(names, args.steps, args.tflops)
        return 0
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("No CUDA device here: make gpu-check needs a GPU (torch.cuda.is_available() is False). "
              "To run the same code on the CPU: python tools/gpu_check.py --device cpu --steps 2 "
              "--recipe lenet5", file=sys.stderr)
        return 2
    print(f"GPU check on {describe_device(device)}, {precision_for(device).name}: {len(names)} recipes, "
          f"{args.steps} steps each; torch {torch.__version__}, Python {platform.python_version()}", flush=True)
    results, start = [], time.perf_counter()
    for name in names:
        r = check(name, device, args.steps, args.test_items)
        results.append(r)
        mem = f", peak {r['peak_gpu_mib']:,.0f} MiB" if r["peak_gpu_mib"] is not None else ""
        rate = f"{r['items_per_s']:,.0f} {r['unit']}/s" + (f" ({r['tokens_per_s']:,.0f} tokens/s)"
                                                           if r["tokens_per_s"] else "")
        print(f"  {name:24} {r['precision']}  {rate}{mem}, loss {r['loss_start']:.3f} -> {r['loss_end']:.3f}"
              f" ({'fell' if r['loss_fell'] else 'DID NOT FALL'}), skipped {r['skipped_steps']}, "
              f"{r['wall_seconds']:.0f} s", flush=True)
    seconds = time.perf_counter() - start
    Path(args.out).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "device": describe_device(device),
                                          "torch": torch.__version__, "steps": args.steps,
                                          "seconds": round(seconds, 1), "recipes": results}, indent=1) + "\n")
    failed = [r["recipe"] for r in results if not r["loss_fell"]]
    print(f"{len(results)} recipes in {seconds:.0f} s; the loss fell in {len(results) - len(failed)}"
          f"{'; not in ' + ', '.join(failed) if failed else ''}. Written to {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
