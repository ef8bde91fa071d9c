"""Benchmarks, printed in one run on one machine and saved to benchmarks/results.json (read by the
book's appendix page "Benchmarks").

1. Training throughput of LeNet-5 on Fashion-MNIST: ``cnn_book.train.fit`` (data held as tensors,
   batched on the device) against the plain ``DataLoader`` + ``ToTensor`` loop on the same model,
   optimiser and number of images. Target: 3x or better on CPU.
2. The quick-mode time of each chapter (``CNN_BOOK_QUICK=1``, a fresh kernel, as nbval runs it).
   Target: 60 s or less on the book's 2-core CI machine.

Each throughput is measured ``--repeats`` times, the two loops interleaved, and the median is
reported: single timings on a shared 2-core machine vary by 30 % from run to run.

    python benchmarks/bench.py [--images 20000] [--repeats 3] [--skip-chapters]
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
import sys
import time
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


def fit_loop(images: int, batch_size: int = 128) -> float:
    data = load_fashion_mnist()
    data.train_x, data.train_y = data.train_x[:images], data.train_y[:images]
    torch.manual_seed(0)
    with contextlib.redirect_stdout(io.StringIO()):  # fit's own report would repeat the figure
        hist = fit(get_model("lenet5"), data, epochs=1, batch_size=batch_size, device="cpu", progress=False)
    return hist.images_per_s


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
    ap.add_argument("--skip-chapters", action="store_true")
    args = ap.parse_args()
    print(f"Machine: {machine()}; fit() device: {describe_device(torch.device('cpu'))}")
    print(f"1. LeNet-5 training throughput on CPU, {args.images:,} Fashion-MNIST images, batch 128")
    plains, fits = [], []
    for i in range(args.repeats):
        plains.append(plain_dataloader_loop(args.images))
        fits.append(fit_loop(args.images))
        print(f"  repeat {i + 1}: DataLoader + ToTensor {plains[-1]:,.0f} images/s, fit {fits[-1]:,.0f} images/s",
              flush=True)
    plain, ours = statistics.median(plains), statistics.median(fits)
    print(f"  median: DataLoader + ToTensor {plain:,.0f} images/s, cnn_book.train.fit {ours:,.0f} images/s "
          f"-> {ours / plain:.1f}x (target 3x)", flush=True)
    result = {
        "date": datetime.date.today().isoformat(), "machine": machine(),
        "default_device": str(default_device()), "images": args.images,
        "repeats": args.repeats, "plain_runs": [round(v) for v in plains], "fit_runs": [round(v) for v in fits],
        "plain_images_per_s": round(plain), "fit_images_per_s": round(ours), "speedup": round(ours / plain, 2),
    }
    if not args.skip_chapters:
        print("2. Each chapter in quick mode (fresh kernel, as nbval runs it; target 60 s):")
        result["chapter_quick_seconds"] = chapter_quick_times()
    out = ROOT / "benchmarks" / "results.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"Saved to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
