"""Benchmarks, printed in one run on one machine and saved to benchmarks/results.json (read by the
book's appendix page "Benchmarks").

1. Training throughput of LeNet-5 on Fashion-MNIST: ``cnn_book.train.fit`` (data held as tensors,
   batched on the device) against the plain ``DataLoader`` + ``ToTensor`` loop on the same model,
   optimiser and number of images, and against ``fit`` as it was at the git revision ``--baseline``
   (what a change of the engine costs; target: 1.0x). ``fit`` against itself on batches made
   beforehand, timed alike in every repeat: its share of its own steps' speed (target: 95 % or
   more) and the true ceiling of its ratio to the plain loop.
   Where the time goes: the plain loop's data path alone; LeNet-5's training steps alone (NCHW,
   channels_last, AdamW's foreach and fused implementations, torch.compile); fit's step split into
   phases and, by torch.profiler, into operators.
2. The quick-mode time of each chapter (``CNN_BOOK_QUICK=1``, a fresh kernel, as nbval runs it).
   Target: 45 s or less on the book's 2-core CI machine.

Each throughput is measured ``--repeats`` times, every measurement in every repeat, and the median is
reported: single timings on a shared 2-core machine vary by 30 % from run to run.

    python benchmarks/bench.py [--images 20000] [--repeats 5] [--baseline REV] [--skip-chapters]
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

from cnn_book.data import ImageData, fashion_mnist_root, load_fashion_mnist  # noqa: E402
from cnn_book.device import default_device, describe_device  # noqa: E402
from cnn_book.models import get_model  # noqa: E402
from cnn_book.train import fit  # noqa: E402


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


COMPILE_SECONDS: list[float] = []


def _step_setup(images: int, batch_size: int, channels_last: bool, **adamw):
    """LeNet-5 (seed 0), its AdamW and Fashion-MNIST batches made beforehand, in the chosen layout."""
    data = load_fashion_mnist()
    layout = torch.channels_last if channels_last else torch.contiguous_format
    batches = [(x.contiguous(memory_format=layout), y) for x, y in data.batches("train", batch_size, limit=images)]
    torch.manual_seed(0)
    model = get_model("lenet5").to(memory_format=layout)
    return model, torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=5e-4, **adamw), batches


def steps_only(images: int, batch_size: int = 128, channels_last: bool = False, weights: list | None = None,
               compiled: bool = False, **adamw) -> float:
    """Images/s of LeNet-5's training steps alone, on batches made beforehand (no data path).

    ``adamw``: options of ``torch.optim.AdamW`` (``foreach=True``, ``fused=True``); the default is what
    the plain loop and ``fit`` use on a CPU (torch's for-loop implementation). The trained weights are
    appended to ``weights`` when it is given, to compare implementations bit for bit. ``compiled``:
    the model goes through ``torch.compile`` (inductor), compiled for the first and the last batch's
    shapes before the clock starts; the seconds that took are in ``COMPILE_SECONDS``."""
    model, opt, batches = _step_setup(images, batch_size, channels_last, **adamw)
    net = torch.compile(model, dynamic=False) if compiled else model  # one static graph per batch shape
    if compiled:
        t0 = time.perf_counter()
        for x, y in (batches[0], batches[-1]):  # two steps that compile; they also train a little
            F.cross_entropy(net(x), y).backward()
        opt.zero_grad(set_to_none=True)
        COMPILE_SECONDS.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for x, y in batches:
        loss = F.cross_entropy(net(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - t0
    if weights is not None:
        weights.append([p.detach().clone() for p in model.parameters()])
    return images / seconds


def same_weights(a: list[torch.Tensor], b: list[torch.Tensor]) -> bool:
    """True when two lists of trained weights are equal bit for bit."""
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def step_phases(images: int, batch_size: int = 128) -> dict:
    """Where the time of fit's step goes (LeNet-5, channels_last, default AdamW).

    Milliseconds per step of the forward pass with the loss, the backward pass and the optimiser
    (``zero_grad`` and ``step``), timed apart over every batch; then torch.profiler's operators with
    the most time of their own, as shares of the profiled total (the profiler slows every operator
    down a little, so its shares, not its times, are what to read)."""
    from torch.profiler import ProfilerActivity, profile

    model, opt, batches = _step_setup(images, batch_size, channels_last=True)
    phases = {"forward and loss": 0.0, "backward": 0.0, "optimiser": 0.0}
    for x, y in batches:
        t0 = time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        t1 = time.perf_counter()
        loss.backward()
        t2 = time.perf_counter()
        opt.step()
        opt.zero_grad(set_to_none=True)
        t3 = time.perf_counter()
        for k, dt in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
            phases[k] += dt
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for x, y in batches[:50]:
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
    ops = [e for e in prof.key_averages() if not e.key.startswith(("Optimizer.", "ProfilerStep"))]
    total = sum(e.self_cpu_time_total for e in ops)
    top = sorted(ops, key=lambda e: e.self_cpu_time_total, reverse=True)[:8]
    return {"ms_per_step": {k: round(1000 * v / len(batches), 3) for k, v in phases.items()},
            "top_ops": [[e.key, round(e.self_cpu_time_total / total, 3)] for e in top]}


class PreparedData(ImageData):
    """The same images with fit's training batches made beforehand (its shuffle, the same sizes): what
    ``fit`` does with them is everything it does but the data path, which ``fit_loop`` times alike."""

    prepared: list = []  # noqa: RUF012 -- set on each instance by ``prepared``

    def batches(self, split, batch_size, *, shuffle=False, augment=False, limit=None, generator=None,
                merge_single=False):
        if split != "train" or batch_size != len(self.prepared[0][0]):  # check_setup's pair, the test set
            yield from super().batches(split, batch_size, limit=limit)
            return
        yield from self.prepared


def prepared(data: ImageData, batch_size: int) -> PreparedData:
    out = PreparedData(data.name, data.classes, data.train_x, data.train_y, data.test_x, data.test_y, data.mean,
                       data.std)
    gen = torch.Generator().manual_seed(0)  # fit's first epoch draws the same order
    out.prepared = list(data.batches("train", batch_size, shuffle=True, generator=gen, merge_single=True))
    return out


def fit_loop(images: int, batch_size: int = 128, fit_fn=fit, steps_only: bool = False) -> float:
    """Images/s of ``fit`` training LeNet-5 for one epoch (its training steps' time: the test set's
    evaluation is not counted); ``steps_only``: on batches made beforehand, the same code otherwise."""
    data = load_fashion_mnist()
    data.train_x, data.train_y = data.train_x[:images], data.train_y[:images]
    data.test_x, data.test_y = data.test_x[:1000], data.test_y[:1000]
    if steps_only:
        data = prepared(data, batch_size)
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


def compiled_steps(images: int) -> tuple[float, float]:
    """``steps_only`` through ``torch.compile``, in a fresh process of its own: inductor's compile
    workers would otherwise stay behind and share the two cores with every later measurement. Returns
    images/s and the seconds the compilation took (inductor's on-disk cache, kept between processes,
    shortens every compilation after the first)."""
    out = subprocess.run([sys.executable, __file__, "--compiled-steps", str(images)], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    got = json.loads(out.strip().splitlines()[-1])
    return got["images_per_s"], got["compile_seconds"]


REFERENCE_SETTING = ("one forward and backward pass, train mode, dropout off; batch 2 of 256 tokens "
                     "(224x224 images for the ViT)")


def _reference_pairs():
    """(name, the book's model, the reference, inputs, each one's output tensor) on the same weights,
    dropout off: BERT-base and GPT-2 small against transformers' (SDPA attention, built from a
    config: random weights, nothing downloaded), ViT-B/16 against torchvision's."""
    import torchvision
    import transformers

    from cnn_book.models import BertModel, get_model
    from cnn_book.models.bert import from_transformers as bert_weights  # (models.bert is the builder)
    from cnn_book.models.gpt import from_transformers as gpt_weights

    torch.manual_seed(0)
    cfg = transformers.BertConfig(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                  attn_implementation="sdpa")
    ref = transformers.BertModel(cfg)
    ours = BertModel(dropout=0.0)  # the encoder and its pooler, as transformers' BertModel
    ours.load_state_dict(bert_weights(ref.state_dict()))
    ids = torch.randint(0, cfg.vocab_size, (2, 256))
    yield "BERT-base", ours, ref, (ids,), lambda o: o[0], lambda o: o.last_hidden_state
    cfg = transformers.GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, attn_implementation="sdpa")
    ref = transformers.GPT2LMHeadModel(cfg)
    ours = get_model("gpt2")
    ours.load_state_dict(gpt_weights(ref.state_dict()))
    ids = torch.randint(0, cfg.vocab_size, (2, 256))
    yield "GPT-2 small", ours, ref, (ids,), lambda o: o, lambda o: o.logits
    ref = torchvision.models.vit_b_16()
    ours = get_model("vit_b_16")
    ours.load_state_dict(ref.state_dict())
    yield "ViT-B/16", ours, ref, (torch.randn(2, 3, 224, 224),), lambda o: o, lambda o: o


def reference_ratios(repeats: int = 5) -> dict[str, dict[str, float]]:
    """The time of one forward and backward pass (batch 2, 256 tokens or 224x224 images, train
    mode, dropout off) of the book's model over its reference's, on the same weights: medians of
    ``repeats`` interleaved rounds after two warm-up rounds, the two taking turns to go first (the
    second of a pair can find the caches and the allocator warmer)."""
    out = {}
    for name, ours, ref, inputs, out_ours, out_ref in _reference_pairs():
        def step(model, output, inputs=inputs):
            model.zero_grad(set_to_none=True)
            output(model(*inputs)).float().pow(2).mean().backward()

        ours.train()
        ref.train()
        times: dict[str, list[float]] = {"ours": [], "reference": []}
        pair = [("ours", ours, out_ours), ("reference", ref, out_ref)]
        for i in range(repeats + 2):
            for key, model, output in pair if i % 2 else pair[::-1]:  # each goes first in every other round
                t0 = time.perf_counter()
                step(model, output)
                if i >= 2:
                    times[key].append(time.perf_counter() - t0)
        a, b = statistics.median(times["ours"]), statistics.median(times["reference"])
        out[name] = {"ours_ms": round(1e3 * a, 1), "reference_ms": round(1e3 * b, 1), "ratio": round(a / b, 3)}
        print(f"  {name:12} the book's {1e3 * a:7.1f} ms, the reference's {1e3 * b:7.1f} ms: {a / b:.2f}x", flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", type=int, default=20_000, help="training images per throughput run")
    ap.add_argument("--repeats", type=int, default=5, help="interleaved repetitions; the median is reported")
    ap.add_argument("--baseline", default="9fe3885", help="git revision whose fit() is the engine's baseline")
    ap.add_argument("--skip-chapters", action="store_true")
    ap.add_argument("--references-only", action="store_true",
                    help="only the book's BERT, GPT-2 and ViT against their references; updates results.json")
    ap.add_argument("--compiled-steps", type=int, metavar="IMAGES", help=argparse.SUPPRESS)  # compiled_steps' process
    args = ap.parse_args()
    if args.compiled_steps:
        speed = steps_only(args.compiled_steps, channels_last=True, compiled=True)
        print(json.dumps({"images_per_s": speed, "compile_seconds": COMPILE_SECONDS[0]}))
        return
    if args.references_only:
        out = ROOT / "benchmarks" / "results.json"
        result = json.loads(out.read_text())
        print(f"Machine: {machine()}: the book's Transformers against their references, forward and backward")
        result["references"] = reference_ratios(args.repeats)
        result["references_machine"] = machine()
        result["references_setting"] = REFERENCE_SETTING
        out.write_text(json.dumps(result, indent=1) + "\n")
        return
    print(f"Machine: {machine()}; fit() device: {describe_device(torch.device('cpu'))}")
    print(f"1. LeNet-5 training throughput on CPU, {args.images:,} Fashion-MNIST images, batch 128; every "
          "measurement in every repeat, so that a slow spell of the machine falls on all of them")
    old_fit = baseline_fit(args.baseline)
    runs: dict[str, list[float]] = {k: [] for k in (
        "plain", "fit", "baseline", "fit_steps", "loader_only", "steps_nchw", "steps_channels_last",
        "steps_channels_last_foreach", "steps_channels_last_fused", "steps_channels_last_compiled")}
    weights = {"default": [], "foreach": [], "fused": []}  # AdamW's three implementations, bit for bit
    compile_seconds = []
    for i in range(args.repeats):
        runs["plain"].append(plain_dataloader_loop(args.images))
        runs["fit"].append(fit_loop(args.images))
        runs["baseline"].append(fit_loop(args.images, fit_fn=old_fit))
        runs["fit_steps"].append(fit_loop(args.images, steps_only=True))
        runs["loader_only"].append(loader_only(args.images))
        runs["steps_nchw"].append(steps_only(args.images))
        for name, adamw in {"": {}, "_foreach": {"foreach": True}, "_fused": {"fused": True}}.items():
            runs[f"steps_channels_last{name}"].append(
                steps_only(args.images, channels_last=True, weights=weights[name[1:] or "default"], **adamw))
        speed, seconds = compiled_steps(args.images)
        runs["steps_channels_last_compiled"].append(speed)
        compile_seconds.append(seconds)
        print(f"  repeat {i + 1}: " + ", ".join(f"{k} {v[-1]:,.0f}" for k, v in runs.items()) + " images/s",
              flush=True)
    med = {k: statistics.median(v) for k, v in runs.items()}
    plain, ours, old = med["plain"], med["fit"], med["baseline"]
    print(f"  median: DataLoader + ToTensor {plain:,.0f} images/s, cnn_book.train.fit {ours:,.0f} images/s "
          f"-> {ours / plain:.2f}x (target 3x); against fit at {args.baseline} ({old:,.0f} images/s): "
          f"{ours / old:.2f}x", flush=True)
    result = {
        "date": datetime.date.today().isoformat(), "machine": machine(),
        "default_device": str(default_device()), "images": args.images,
        "repeats": args.repeats, "plain_runs": [round(v) for v in runs["plain"]],
        "fit_runs": [round(v) for v in runs["fit"]],
        "plain_images_per_s": round(plain), "fit_images_per_s": round(ours), "speedup": round(ours / plain, 2),
        "baseline": args.baseline, "baseline_runs": [round(v) for v in runs["baseline"]],
        "baseline_images_per_s": round(old), "against_baseline": round(ours / old, 2),
        "fit_steps_runs": [round(v) for v in runs["fit_steps"]],
    }
    print("  where the time goes (medians): fit on batches made beforehand (all it does but its data path), the "
          "plain loop's data path alone, and bare training steps on batches made beforehand")
    for k in list(runs)[3:]:
        result[f"{k}_images_per_s"] = round(med[k])
        print(f"  {k:28} {med[k]:>9,.0f} images/s", flush=True)
    for name in ("foreach", "fused"):
        same = same_weights(weights["default"][0], weights[name][0])
        result[f"adamw_{name}_same_weights"] = same
        print(f"  AdamW {name:7} trains the same weights as the default, bit for bit: {same}", flush=True)
    # fit and fit on batches made beforehand run the same code, timed alike (training steps only), in every
    # repeat: the second is fit without its data path, so fit's ratio cannot pass its ceiling but by noise
    ceiling = med["fit_steps"] / plain
    result["ratio_ceiling"] = round(ceiling, 2)
    result["fit_share_of_steps"] = round(ours / med["fit_steps"], 3)
    result["fit_steps_share_of_bare_steps"] = round(med["fit_steps"] / med["steps_channels_last"], 3)
    print(f"  fit runs at {result['fit_share_of_steps']:.1%} of its own steps' speed (target 95 %): its data path "
          f"costs the rest. Without it fit would be {ceiling:.2f}x the plain loop (the ceiling); it is "
          f"{ours / plain:.2f}x", flush=True)
    print(f"  fit's steps (the task's loss and running sums, the schedule) run at "
          f"{result['fit_steps_share_of_bare_steps']:.1%} of a bare loop's steps (the model, the loss, AdamW)",
          flush=True)
    # the plain loop's time per image is its data path's plus its steps': with fit's steps as fast as the
    # fastest bare steps below, the ratio could reach this
    plain_per_image = 1 / result["loader_only_images_per_s"] + 1 / result["steps_nchw_images_per_s"]
    result["compile_seconds"] = round(statistics.median(compile_seconds), 1)
    print(f"  torch.compile took {result['compile_seconds']:.1f} s (median) before its steps, not counted above")
    variants = ("foreach", "fused", "compiled")
    fastest = max(variants, key=lambda k: result[f"steps_channels_last_{k}_images_per_s"])
    result["fastest_variant"] = fastest
    result["ratio_ceiling_fastest"] = round(plain_per_image * result[f"steps_channels_last_{fastest}_images_per_s"], 2)
    print(f"  with the fastest of these steps ({fastest}) and no other work, a loop would be "
          f"{result['ratio_ceiling_fastest']:.2f}x the plain loop", flush=True)
    result["step"] = step_phases(args.images)
    print("  fit's step (channels_last), ms per step:",
          ", ".join(f"{k} {v:.2f}" for k, v in result["step"]["ms_per_step"].items()))
    print("  operators with the most time of their own (torch.profiler, share of the step):",
          ", ".join(f"{k} {v:.0%}" for k, v in result["step"]["top_ops"]), flush=True)
    if not args.skip_chapters:
        print("2. Each chapter in quick mode (fresh kernel, as nbval runs it; target 45 s):")
        result["chapter_quick_seconds"] = chapter_quick_times()
    print("4. the book's Transformers against their references (forward and backward, same weights)")
    result["references"] = reference_ratios(args.repeats)
    result["references_machine"] = machine()
    result["references_setting"] = REFERENCE_SETTING
    out = ROOT / "benchmarks" / "results.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"Saved to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
