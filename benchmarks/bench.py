"""Benchmarks, printed in one run on one machine and saved to benchmarks/results.json (read by the
book's appendix page "Benchmarks").

1. Training throughput of LeNet-5 on Fashion-MNIST: ``cnn_book.train.fit`` (data held as tensors,
   batched on the device) against the plain ``DataLoader`` + ``ToTensor`` loop on the same model,
   optimiser and number of images (target: 3x or better on CPU), and against ``fit`` as it was at
   the git revision ``--baseline`` (what a change of the engine costs; target: 1.0x).
2. The quick-mode time of each chapter (``CNN_BOOK_QUICK=1``, a fresh kernel, as nbval runs it).
   Target: 60 s or less on the book's 2-core CI machine.

Each throughput is measured ``--repeats`` times, the two loops interleaved, and the median is
reported: single timings on a shared 2-core machine vary by 30 % from run to run.

    python benchmarks/bench.py [--images 20000] [--repeats 3] [--baseline REV] [--skip-chapters]
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import types
from pathlib import Path

import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from cnn_book.data import fashion_mnist_root, load_fashion_mnist  # noqa: E402
from cnn_book.models import get_model  # noqa: E402
from cnn_book.train import default_device, describe_device, fit  # noqa: E402


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}"


def plain_dataloader_loop(images: int, batch_size: int = 128) -> float:
    """Images/s of the textbook loop: torchvision dataset, ToTensor + Normalize per sample, DataLoader."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    data = load_fashion_mnist()
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    ds = datasets.FashionMNIST(fashion_mnist_root(), train=True, transform=tf)
    loader = DataLoader(Subset(ds, range(images)), batch_size=batch_size, shuffle=True, num_workers=0)
    torch.manual_seed(0)
    model = get_model("lenet5")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    model.train()
    t0 = time.perf_counter()
    n = 0
    for x, y in loader:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        n += len(y)
    return n / (time.perf_counter() - t0)


def loader_only(images: int, batch_size: int = 128) -> float:
    """Images/s of the plain loop's data path alone: the DataLoader with no model."""
    from torch.utils.data import DataLoader, Subset
    from torchvision import datasets, transforms

    data = load_fashion_mnist()
    tf = transforms.Compose([transforms.ToTensor(), transforms.Normalize(data.mean, data.std)])
    ds = datasets.FashionMNIST(fashion_mnist_root(), train=True, transform=tf)
    loader = DataLoader(Subset(ds, range(images)), batch_size=batch_size, shuffle=True, num_workers=0)
    t0 = time.perf_counter()
    n = sum(len(y) for _, y in loader)
    return n / (time.perf_counter() - t0)


def steps_only(images: int, batch_size: int = 128, channels_last: bool = False) -> float:
    """Images/s of LeNet-5's training steps alone, on batches made beforehand (no data path)."""
    data = load_fashion_mnist()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    batches = [(x.contiguous(memory_format=layout), y) for x, y in data.batches("train", batch_size, limit=images)]
    torch.manual_seed(0)
    model = get_model("lenet5").to(memory_format=layout)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4)
    t0 = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return images / (time.perf_counter() - t0)


def fit_loop(images: int, batch_size: int = 128, fit_fn=fit) -> float:
    data = load_fashion_mnist()
    data.train_x, data.train_y = data.train_x[:images], data.train_y[:images]
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # fit's own report would repeat the figure
        hist = fit_fn(get_model("lenet5"), data, epochs=1, batch_size=batch_size, device="cpu", progress=False)
    return hist.images_per_s


def baseline_fit(rev: str):
    """``fit`` from ``cnn_book/train.py`` as it was at git revision ``rev``, imported beside today's."""
    source = subprocess.run(["git", "show", f"{rev}:cnn_book/train.py"], cwd=ROOT, check=True,
                            capture_output=True, text=True).stdout
    module = types.ModuleType("cnn_book._train_baseline")
    module.__package__ = "cnn_book"
    sys.modules[module.__name__] = module  # dataclasses look their module up there
    exec(compile(source, f"{rev}:cnn_book/train.py", "exec"), module.__dict__)
    return module.fit


def chapter_quick_times() -> dict[str, float]:
    sys.path.insert(0, str(ROOT / "tools"))
    import nbformat
    from nbclient import NotebookClient

    os.environ["CNN_BOOK_QUICK"] = "1"
    os.environ["CNN_BOOK_PROGRESS"] = "0"
    times = {}
    for path in sorted((ROOT / "chapters").glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        NotebookClient(nb, timeout=600, kernel_name="python3",
                       resources={"metadata": {"path": str(path.parent)}}).execute()
        times[path.stem] = round(time.perf_counter() - t0, 1)
        print(f"  {path.stem}: {times[path.stem]:.1f} s in quick mode", flush=True)
    os.environ.pop("CNN_BOOK_QUICK")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000, help="training images per throughput run")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved repetitions; the median is reported")
    ap.add_argument("--baseline", default="9fe3885", help="git revision whose fit() is the engine's baseline")
    ap.add_argument("--skip-chapters", action="store_true")
    args = ap.parse_args()
    print(f"Machine: {machine()}; fit() device: {describe_device(torch.device('cpu'))}")
    print(f"1. LeNet-5 training throughput on CPU, {args.images:,} Fashion-MNIST images, batch 128")
    old_fit = baseline_fit(args.baseline)
    plains, fits, olds = [], [], []
    for i in range(args.repeats):
        plains.append(plain_dataloader_loop(args.images))
        fits.append(fit_loop(args.images))
        olds.append(fit_loop(args.images, fit_fn=old_fit))
        print(f"  repeat {i + 1}: DataLoader + ToTensor {plains[-1]:,.0f} images/s, fit {fits[-1]:,.0f} images/s, "
              f"fit at {args.baseline} {olds[-1]:,.0f} images/s", flush=True)
    plain, ours, old = statistics.median(plains), statistics.median(fits), statistics.median(olds)
    print(f"  median: DataLoader + ToTensor {plain:,.0f} images/s, cnn_book.train.fit {ours:,.0f} images/s "
          f"-> {ours / plain:.2f}x (target 3x); against fit at {args.baseline} ({old:,.0f} images/s): "
          f"{ours / old:.2f}x", flush=True)
    result = {
        "date": datetime.date.today().isoformat(), "machine": machine(),
        "default_device": str(default_device()), "images": args.images,
        "repeats": args.repeats, "plain_runs": [round(v) for v in plains], "fit_runs": [round(v) for v in fits],
        "plain_images_per_s": round(plain), "fit_images_per_s": round(ours), "speedup": round(ours / plain, 2),
        "baseline": args.baseline, "baseline_runs": [round(v) for v in olds],
        "baseline_images_per_s": round(old), "against_baseline": round(ours / old, 2),
    }
    print("  where the time goes (medians of as many runs): the plain loop's data path alone, and the training "
          "steps alone on batches made beforehand")
    parts = {"loader_only": [], "steps_nchw": [], "steps_channels_last": []}
    for _ in range(args.repeats):
        parts["loader_only"].append(loader_only(args.images))
        parts["steps_nchw"].append(steps_only(args.images))
        parts["steps_channels_last"].append(steps_only(args.images, channels_last=True))
    for k, v in parts.items():
        result[f"{k}_images_per_s"] = round(statistics.median(v))
        print(f"  {k:22} {statistics.median(v):>9,.0f} images/s", flush=True)
    # the plain loop's time per image is its data path's plus its steps'; fit's floor is its steps'
    ceiling = (1 / result["loader_only_images_per_s"] + 1 / result["steps_nchw_images_per_s"]) * result[
        "steps_channels_last_images_per_s"]
    result["ratio_ceiling"] = round(ceiling, 2)
    print(f"  a fit with no overhead at all would be {ceiling:.2f}x the plain loop; it is {ours / plain:.2f}x",
          flush=True)
    if not args.skip_chapters:
        print("2. Each chapter in quick mode (fresh kernel, as nbval runs it; target 60 s):")
        result["chapter_quick_seconds"] = chapter_quick_times()
    out = ROOT / "benchmarks" / "results.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"Saved to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
