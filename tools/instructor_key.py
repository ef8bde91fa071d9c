"""The instructor's key: run every training exercise as its solution says, and write the key page.

    python tools/instructor_key.py run                 # every training exercise (about 80 min here)
    python tools/instructor_key.py run lenet-d2l ...   # some of them; the others' records are kept
    python tools/instructor_key.py wrong [labels]      # only the wrong set-ups again (seconds)
    python tools/instructor_key.py page                # book/instructor_key.md from the records

``run`` executes, for each chapter with a training exercise, the chapter's own cells that set the
exercise up (its imports, its data and, where the exercise compares with it, its training run),
taken verbatim from the chapter's notebook; then the code of each solution exactly as the
chapter prints it; then the exercise's typical wrong set-up, as far as its first error or its
symptom. Every ``train.fit`` call is recorded, with what it printed, into
``book/exercise_runs.json``. ``CNN_BOOK_QUICK=1`` writes to ``_build/exercise_runs.json``
instead: the tests run the solutions that way, so a solution that no longer runs fails there.

``page`` writes the appendix page (full edition only): every exercise of chapters 1-9 with its
expected answer (the solution, from the chapter) and, for the training exercises, the recorded
numbers, the range a student should see and what a wrong set-up produces.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import os
import platform
import re
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = ROOT / "chapters"
RUNS = ROOT / "book" / "exercise_runs.json"
QUICK_RUNS = ROOT / "_build" / "exercise_runs.json"
PAGE = ROOT / "book" / "instructor_key.md"
IMPORTS = "from cnn_book import exercises"  # the chapters' import cell

# an exercise and its solution, as the chapters write them
EXERCISE = re.compile(r"^:::\{exercise\}\n:label: ([\w-]+)\n(.*?)^:::[ \t]*$", re.M | re.S)
SOLUTION = re.compile(r"^:::\{solution\} ([\w-]+)\n(.*?)^:::[ \t]*$", re.M | re.S)
CODE = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


@dataclass(frozen=True)
class Training:
    """A training exercise: the chapter cells that set it up, and its typical wrong set-up."""

    chapter: str  # the notebook's stem
    wrong: str  # code a student typically gets wrong; it raises, or sets ``symptom``
    wrong_means: str  # what the error or symptom tells the teacher


# The chapter cells each chapter's exercises need, found by a line they contain ("code:" = literal
# code instead, where the chapter's cell would train more than the exercise needs).
SETUP = {
    "01_simple_cnn": [IMPORTS, "data = load_fashion_mnist()", 'recipes.get("simple_cnn")'],
    "02_lenet5": [IMPORTS, "data = load_fashion_mnist()", 'recipes.get("lenet5")  #',
                  'd2l_recipe = recipes.get("lenet5_d2l")'],
    "03_alexnet": [IMPORTS, 'recipes.get("alexnet")'],
    "04_vgg": [IMPORTS, 'recipes.get("vgg11_bn")'],
    "05_googlenet": [IMPORTS, 'recipes.get("googlenet")'],
    # the recorded baseline: the four networks of the degradation experiment, seed 0 (the chapter trains
    # seeds 0 and 1 through seeds.over_seeds, which trains seed 0 exactly so)
    "06_resnet": [IMPORTS, 'code:from cnn_book import recipes, seeds, train\n'
                  'data = load_fashion_mnist()\nrecipe = recipes.get("resnet_cifar")\n'
                  'mini = recipe.prepare(data)\nruns = {}\n'
                  'for depth in (20, 56):\n    for plain in (True, False):\n'
                  '        runs[f"{depth}{plain}"] = seeds.over_seeds(\n'
                  '            lambda d=depth, p=plain: recipe.build(depth=d, plain=p), mini, seeds=(0,),\n'
                  '            metric="train_acc", verbose=True, **recipe.fit_args)\n'],
    # the sweeps' data only: the exercise trains its own two networks
    "07_mobilenet": [IMPORTS, 'code:from cnn_book import recipes\ndata = load_fashion_mnist()\n'
                     'sweep = recipes.get("mobilenet_v1_sweep")\nsubset = sweep.prepare(data)\n'],
    "08_efficientnet": [IMPORTS, 'recipes.get("efficientnet_b0")'],
    "10_unet": [IMPORTS, "scenes = fashion_mnist_scenes(", 'recipes.get("unet")',
                "scores = train.segmentation_scores(model, scenes)"],
}

TRAINING = {
    "simple-cnn-gap": Training(
        "01_simple_cnn",
        'm = recipe.build()\n'
        'm.classifier = nn.Sequential(\n'
        '    nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)\n'
        ')\n'
        'm(data.images("train", 0))  # forward not replaced\n',
        "the classifier was replaced but not `forward`, which still flattens the 7x7 map first"),
    "simple-cnn-no-augment": Training(
        "01_simple_cnn",
        'train.fit(\n'
        '    recipe.build(), recipe.prepare(data), augment=False, **recipe.fit_args\n'
        ')\n',
        "`augment=False` given next to `**recipe.fit_args`, which holds `augment` already: "
        "change the recipe's arguments (`{**recipe.fit_args, \"augment\": False}`) instead"),
    "lenet-d2l": Training(
        "02_lenet5",
        'm = d2l_recipe.build()  # the options forgotten\n'
        'symptom = f"{m.features[1]}, {m.features[2]}"\n',
        "without `activation=\"relu\", pool=\"max\"` the recipe builds d2l's own network (sigmoid, "
        "average pooling), and the run repeats the chapter's \"d2l's LeNet\" row; the solution's "
        "first run, at d2l's rate of 0.9, shows the other typical failure: a `nan` loss"),
    "alexnet-relu": Training(
        "03_alexnet",
        'm = recipe.build()\n'
        'for layer in m.modules():\n'
        '    if isinstance(layer, nn.ReLU):\n'
        '        layer = nn.Tanh()  # rebinds the loop variable, replaces nothing\n'
        'symptom = sum(isinstance(layer, nn.Tanh) for layer in m.modules())\n',
        "the loop rebinds a name and the model keeps its ReLUs (0 Tanh modules): the run "
        "repeats the chapter's ReLU numbers"),
    "vgg-no-bn": Training(
        "04_vgg",
        'm = cnn_book.get_model("vgg11")  # without the recipe\'s options\n'
        'm(data32.images("train", 0))\n',
        "`get_model(\"vgg11\")` without `**recipe.options` builds ImageNet's network (3 input "
        "channels, 1,000 classes) and a one-channel image does not fit it"),
    "googlenet-no-aux": Training(
        "05_googlenet",
        'm = cnn_book.get_model("googlenet", aux_logits=False)  # not recipe.build\n'
        'm(data.images("train", 0))\n',
        "the model was built without the recipe's options (one channel, ten classes, the "
        "small-input stem, a quarter of the widths): use `recipe.build(aux_logits=False)`"),
    "resnet-deeper": Training(
        "06_resnet",
        'recipes.get("resnet18").build(depth=110)\n',
        "the chapter's `recipe` is ResNet-18's by the end of the page, and `resnet18` fixes its own "
        "depth: take the degradation experiment's `recipes.get(\"resnet_cifar\")`"),
    "mobilenet-linear": Training(
        "07_mobilenet",
        'from cnn_book.models.mobilenet import InvertedResidual\n'
        'net = cnn_book.get_model("mobilenet_v2", num_classes=10, in_channels=1,\n'
        '                         width_mult=0.5, small_input=True)\n'
        'for block in net.features:\n'
        '    if isinstance(block, InvertedResidual):\n'
        '        block.append(nn.ReLU6())  # on the block, not on block.conv\n',
        "`InvertedResidual` is not a sequence: the ReLU6 goes at the end of its `conv`"),
    "effnet-sd": Training(
        "08_efficientnet",
        'm = cnn_book.get_model(\n'
        '    "efficientnet_b0", stochastic_depth_prob=0.0, dropout=0.0\n'
        ')\n'
        'm(data.images("train", 0))\n',
        "built without `num_classes=10, in_channels=1` (or `recipe.build(...)`): ImageNet's "
        "three-channel stem does not take Fashion-MNIST's one channel"),
    "unet-dice": Training(
        "10_unet",
        'from dataclasses import replace\n'
        'ce = replace(recipe, loss="ce")\n'
        'train.fit(ce.build(), ce.prepare(scenes), **ce.fit_args)\n',
        "the loss's name was misspelt; the task names the ones it takes"),
    "unet-noskip": Training(
        "10_unet",
        'from cnn_book.models.unet import Up\n'
        'class NoSkip(Up):  # forward changed, the convolution not\n'
        '    def forward(self, x, skip):\n'
        '        return self.conv(self.upconv(x))\n'
        'm = recipe.build()\n'
        'for i, up in enumerate(m.decoder):\n'
        '    c_in, c_out = up.upconv.in_channels, up.upconv.out_channels\n'
        '    m.decoder[i] = NoSkip(c_in, c_out, 1, True)\n'
        'm(scenes.images("train", 0))\n',
        "`forward` drops the skip but the double convolution still expects the skip's channels "
        "as well: it must be rebuilt for the up-sampled channels alone"),
}
# Values read from the namespace after a solution ran, for the key (expressions; lists and numbers).
EXTRAS = {
    "simple-cnn-gap": {"params": "inspect.count_parameters(m)",
                       "chapter_params": "inspect.count_parameters(model)"},
    "unet-dice": {"classes": "list(scores.classes)", "iou_dice": "scores.iou.tolist()",
                  "iou_ce": "train.segmentation_scores(ce_only, scenes).iou.tolist()"},
    "unet-noskip": {"classes": "list(scores.classes)", "iou_skips": "scores.iou.tolist()",
                    "iou_noskip": "no_skip.iou.tolist()"},
}
ORDER = ["02_lenet5", "07_mobilenet", "06_resnet", "01_simple_cnn", "04_vgg", "05_googlenet", "10_unet",
         "08_efficientnet", "03_alexnet"]  # the quickest first


def chapter_markdown(stem: str) -> str:
    nb = json.loads((CHAPTERS / f"{stem}.ipynb").read_text())
    return "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")


def exercises(stem: str) -> list[tuple[str, str, str]]:
    """(label, question, solution) of every exercise of a chapter, in order."""
    md = chapter_markdown(stem)
    solutions = {label: body for label, body in SOLUTION.findall(md)}
    out = []
    for label, question in EXERCISE.findall(md):
        body = re.sub(r"^:class: dropdown\n", "", solutions.get(label, ""), flags=re.M)
        out.append((label, question.strip(), body.strip()))
    return out


def solution_code(label: str) -> str:
    stem = TRAINING[label].chapter
    body = dict((lab, sol) for lab, _, sol in exercises(stem))[label]
    return "\n".join(CODE.findall(body))


def setup_code(stem: str) -> list[str]:
    nb = json.loads((CHAPTERS / f"{stem}.ipynb").read_text())
    cells = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
    out = []
    for marker in SETUP[stem]:
        if marker.startswith("code:"):
            out.append(marker[5:])
            continue
        hits = [s for s in cells if marker in s]
        if not hits:
            raise SystemExit(f"{stem}: no code cell contains {marker!r}; update SETUP in {__file__}")
        out.append(hits[0])
    return out


def _record(history, printed: str) -> dict:
    return {"model": history.model, "device": history.device, "precision": history.precision,
            "quick": history.quick, "input": "x".join(map(str, history.input_shape)),
            "epochs": len(history.epochs),
            "curves": {k: [round(v, 4) for v in vs] for k, vs in history.curves.items()},
            "wall_seconds": round(history.wall_seconds, 1), "train_seconds": round(history.train_seconds, 1),
            "images_per_s": round(history.images_per_s), "printed": printed}


class _Recorder:
    """Wraps ``train.fit`` so that every call's History and printed lines are kept."""

    def __init__(self, train_module):
        self.train, self.fit, self.runs = train_module, train_module.fit, []

    def __enter__(self):
        def fit(*args, **kwargs):
            buf = io.StringIO()
            with contextlib.redirect_stdout(_Tee(buf, sys.stdout)):
                history = self.fit(*args, **kwargs)
            self.runs.append(_record(history, buf.getvalue()))
            return history

        self.train.fit = fit
        return self

    def __exit__(self, *exc):
        self.train.fit = self.fit


class _Tee(io.TextIOBase):
    def __init__(self, *streams):
        self.streams = streams

    def write(self, s):
        for st in self.streams:
            st.write(s)
        return len(s)


def _error(exc: BaseException) -> str:
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {first}"


def _machine() -> dict:
    import torch

    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        names = re.findall(r"^model name\s*:\s*(.+)$", Path("/proc/cpuinfo").read_text(), re.M)
        cpu = names[0] if names else cpu
    device = f"cuda ({torch.cuda.get_device_name()})" if torch.cuda.is_available() else \
        f"cpu ({torch.get_num_threads()} threads)"
    return {"device": device, "cpu": cpu, "torch": torch.__version__, "python": platform.python_version(),
            "date": datetime.date.today().isoformat()}


def run(labels: list[str], out: Path) -> dict:
    """Run the training exercises ``labels`` (chapter by chapter) and merge them into ``out``."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["CNN_BOOK_PROGRESS"] = "0"
    os.environ.setdefault("CNN_BOOK_RESULTS", str(ROOT / "_build" / "exercise_results"))  # not the book's
    Path(os.environ["CNN_BOOK_RESULTS"]).mkdir(parents=True, exist_ok=True)  # results.record needs the folder
    import matplotlib.pyplot as plt

    from cnn_book import train

    unknown = sorted(set(labels) - set(TRAINING))
    if unknown:
        raise SystemExit(f"not training exercises: {', '.join(unknown)}; they are {', '.join(TRAINING)}")
    records = json.loads(out.read_text()) if out.exists() else {"exercises": {}}
    records["machine"] = _machine()
    for stem in ORDER:
        todo = [lab for lab in TRAINING if TRAINING[lab].chapter == stem and lab in labels]
        if not todo:
            continue
        print(f"== {stem}: set-up", flush=True)
        ns: dict = {"__name__": f"key_{stem}"}
        t0 = time.perf_counter()
        with _Recorder(train) as rec:
            for code in setup_code(stem):
                exec(compile(code, f"<{stem} set-up>", "exec"), ns)
                plt.close("all")
        baseline = rec.runs
        setup_seconds = time.perf_counter() - t0
        for label in todo:
            print(f"== {label}", flush=True)
            entry = {"chapter": stem[:2], "setup_seconds": round(setup_seconds), "baseline": baseline}
            t0 = time.perf_counter()
            buf = io.StringIO()
            try:
                with _Recorder(train) as rec, contextlib.redirect_stdout(_Tee(buf, sys.stdout)):
                    exec(compile(solution_code(label), f"<solution {label}>", "exec"), ns)
                entry["error"] = None
            except Exception as exc:  # noqa: BLE001 -- kept in the record, the other exercises go on
                traceback.print_exc()
                entry["error"] = _error(exc)
            plt.close("all")
            entry["runs"], entry["printed"] = rec.runs, buf.getvalue()
            entry["extras"] = {k: eval(expr, ns) for k, expr in EXTRAS.get(label, {}).items()} \
                if entry["error"] is None else {}
            entry["seconds"] = round(time.perf_counter() - t0, 1)
            entry["wrong"] = _wrong(TRAINING[label], ns, train)
            entry["machine"] = records["machine"]
            records["exercises"][label] = entry
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(records, indent=1) + "\n")
    return records


def rerun_wrong(labels: list[str], out: Path) -> None:
    """Run again only the wrong set-ups of ``labels`` after their chapters' set-up in quick mode: what
    a wrong set-up gives depends on the package's checks, not on the training, so a change to the
    checks needs these seconds, not the full runs."""
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ["CNN_BOOK_PROGRESS"] = "0"
    os.environ.setdefault("CNN_BOOK_RESULTS", str(ROOT / "_build" / "exercise_results"))
    Path(os.environ["CNN_BOOK_RESULTS"]).mkdir(parents=True, exist_ok=True)
    import matplotlib.pyplot as plt

    from cnn_book import train

    records = json.loads(out.read_text())
    old = os.environ.get("CNN_BOOK_QUICK")
    os.environ["CNN_BOOK_QUICK"] = "1"
    try:
        for stem in ORDER:
            todo = [lab for lab in labels if TRAINING[lab].chapter == stem]
            if not todo:
                continue
            ns: dict = {"__name__": f"key_{stem}"}
            with contextlib.redirect_stdout(io.StringIO()):
                for code in setup_code(stem):
                    exec(compile(code, f"<{stem} set-up>", "exec"), ns)
                    plt.close("all")
            for label in todo:
                records["exercises"][label]["wrong"] = _wrong(TRAINING[label], ns, train)
                print(f"{label}: {records['exercises'][label]['wrong']['outcome']}")
    finally:
        if old is None:
            del os.environ["CNN_BOOK_QUICK"]
        else:
            os.environ["CNN_BOOK_QUICK"] = old
    out.write_text(json.dumps(records, indent=1) + "\n")


def _wrong(ex: Training, ns: dict, train) -> dict:
    """Run the typical wrong set-up in a copy of the namespace; training, if it starts, is quick."""
    scratch = dict(ns)
    old = os.environ.get("CNN_BOOK_QUICK")
    os.environ["CNN_BOOK_QUICK"] = "1"
    outcome = None
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(ex.wrong, "<wrong set-up>", "exec"), scratch)
        outcome = f"no error; symptom = {scratch['symptom']!r}" if "symptom" in scratch else "no error"
    except Exception as exc:  # noqa: BLE001 -- the error is the point
        outcome = _error(exc)
    finally:
        if old is None:
            del os.environ["CNN_BOOK_QUICK"]
        else:
            os.environ["CNN_BOOK_QUICK"] = old
    return {"code": ex.wrong, "outcome": outcome, "means": ex.wrong_means}


# ---------------------------------------------------------------------------------------------
# The page


RUN_LABELS = {  # label -> (the chapter's runs the exercise compares with, the solution's runs)
    "simple-cnn-gap": (["the chapter's network"], ["global average pooling head"]),
    "simple-cnn-no-augment": (["the chapter's network, augmented"], ["not augmented"]),
    "lenet-d2l": (["modern LeNet-5, AdamW (the chapter's)", "d2l's LeNet, d2l's plain SGD at 0.9",
                   "d2l's LeNet, the chapter's AdamW"],
                  ["modern LeNet-5, plain SGD at 0.9", "modern LeNet-5, plain SGD at 0.1"]),
    "alexnet-relu": (["ReLU (the chapter's)"], ["tanh"]),
    "vgg-no-bn": (["with batch norm (the chapter's)"],
                  ["without batch norm, lr 0.002", "without batch norm, lr 0.0005"]),
    "googlenet-no-aux": (["with the auxiliary classifiers (the chapter's)"], ["without them"]),
    "resnet-deeper": (["Plain-20", "ResNet-20", "Plain-56", "ResNet-56"], ["Plain-110", "ResNet-110"]),
    "mobilenet-linear": ([], ["linear bottleneck, seed 0", "ReLU6 on the bottleneck, seed 0",
                              "linear bottleneck, seed 1", "ReLU6 on the bottleneck, seed 1"]),
    "effnet-sd": (["stochastic depth 0.2, dropout 0.2 (the chapter's)"], ["neither"]),
    "unet-dice": (["cross-entropy + Dice (the chapter's)"], ["cross-entropy alone"]),
    "unet-noskip": (["with the skips (the chapter's)"], ["without the skips"]),
}


def _pct(x: float) -> str:
    return "nan" if x != x else f"{100 * x:.2f} %"


def _num(x: float, digits: int = 3) -> str:
    return "nan" if x != x else f"{x:.{digits}f}"


def _acc(run: dict) -> float:
    return run["curves"]["test_acc"][-1]


def _miou(run: dict) -> float:
    return run["curves"]["test_miou"][-1]


def _loss1(run: dict) -> float:
    """The first epoch's training cross-entropy (GoogLeNet's loss adds its auxiliary heads' too)."""
    c = run["curves"]
    return c.get("train_cross_entropy", c["train_loss"])[0]


def _gap(run: dict) -> float:
    return run["curves"]["train_acc"][-1] - run["curves"]["test_acc"][-1]


def _secs(runs: list[dict]) -> str:
    return f"{sum(r['wall_seconds'] for r in runs):,.0f} s"


def _classes(names: list[str], diff: list[float], sign: int, n: int = 3) -> str:
    pairs = sorted(((sign * d, c) for c, d in zip(names, diff, strict=True) if sign * d >= 0.0005), reverse=True)[:n]
    return ", ".join(f"{c} ({sign * d:+.3f})" for d, c in pairs) or "none"


def summary(label: str, e: dict) -> str:
    """One sentence with the exercise's measured numbers: the page prints it, and the chapter's
    solution quotes it (a test checks that the two agree)."""
    b, r = e["baseline"], e["runs"]
    x = e.get("extras", {})
    if label == "simple-cnn-gap":
        return (f"the pooled head leaves {x['params']:,} parameters (the chapter's network has "
                f"{x['chapter_params']:,}) and reaches {_pct(_acc(r[0]))} test accuracy after the same "
                f"{r[0]['epochs']} epochs, against {_pct(_acc(b[0]))} ({_secs(r)})")
    if label == "simple-cnn-no-augment":
        return (f"in the last epoch the training accuracy is {100 * _gap(r[0]):+.2f} points above the test "
                f"accuracy without augmentation and {100 * _gap(b[0]):+.2f} with it; the test accuracy is "
                f"{_pct(_acc(r[0]))} against {_pct(_acc(b[0]))} ({_secs(r)})")
    if label == "lenet-d2l":
        return (f"the modern LeNet-5 with d2l's plain SGD at 0.9 ends with a loss of "
                f"{_num(r[0]['curves']['train_loss'][-1])} and {_pct(_acc(r[0]))} test accuracy; at 0.1 it "
                f"reaches {_pct(_acc(r[1]))}. D2l's LeNet reaches {_pct(_acc(b[1]))} with d2l's training and "
                f"{_pct(_acc(b[2]))} with the chapter's AdamW; the modern network with AdamW "
                f"{_pct(_acc(b[0]))} ({_secs(r)} for the two runs)")
    if label == "alexnet-relu":
        return (f"the first epoch's training loss is {_num(_loss1(r[0]))} with tanh against "
                f"{_num(_loss1(b[0]))} with ReLU, and the test accuracy after {r[0]['epochs']} epochs "
                f"{_pct(_acc(r[0]))} against {_pct(_acc(b[0]))} ({_secs(r)})")
    if label == "vgg-no-bn":
        return (f"without batch norm the first epoch's loss is {_num(_loss1(r[0]))} at the recipe's rate and "
                f"{_num(_loss1(r[1]))} at 0.0005, against {_num(_loss1(b[0]))} with it; the test accuracy "
                f"after {r[0]['epochs']} epochs is {_pct(_acc(r[0]))} and {_pct(_acc(r[1]))} against "
                f"{_pct(_acc(b[0]))} ({_secs(r)} for the two runs)")
    if label == "googlenet-no-aux":
        per = lambda run: " / ".join(f"{100 * a:.2f}" for a in run["curves"]["test_acc"])  # noqa: E731
        return (f"test accuracy after each epoch: {per(r[0])} % without the auxiliary classifiers, "
                f"{per(b[0])} % with them ({_secs(r)})")
    if label == "resnet-deeper":
        acc = {run["model"].split(" ")[0]: _acc(run) for run in b + r}
        return (f"test accuracy of Plain-20, -56, -110: {_pct(acc['Plain-20'])}, {_pct(acc['Plain-56'])}, "
                f"{_pct(acc['Plain-110'])}; of ResNet-20, -56, -110: {_pct(acc['ResNet-20'])}, "
                f"{_pct(acc['ResNet-56'])}, {_pct(acc['ResNet-110'])} ({_secs(r)} for the two 110-layer runs)")
    if label == "mobilenet-linear":
        return (f"test accuracy with the linear bottleneck {_pct(_acc(r[0]))} and {_pct(_acc(r[2]))} (seeds 0 "
                f"and 1), with a ReLU6 on it {_pct(_acc(r[1]))} and {_pct(_acc(r[3]))} ({_secs(r)} for the "
                f"four runs)")
    if label == "effnet-sd":
        return (f"in the last epoch the training accuracy is {_pct(r[0]['curves']['train_acc'][-1])} without "
                f"the regularisers against {_pct(b[0]['curves']['train_acc'][-1])} with them, the test accuracy "
                f"{_pct(_acc(r[0]))} against {_pct(_acc(b[0]))} ({_secs(r)})")
    if label == "unet-dice":
        diff = [d - c for c, d in zip(x["iou_ce"], x["iou_dice"], strict=True)]
        return (f"mean IoU {_num(_miou(r[0]))} with cross-entropy alone against {_num(_miou(b[0]))} with Dice "
                f"added; Dice gains most on {_classes(x['classes'], diff, 1)} and loses on "
                f"{_classes(x['classes'], diff, -1)} ({_secs(r)})")
    if label == "unet-noskip":
        diff = [s - n for s, n in zip(x["iou_skips"], x["iou_noskip"], strict=True)]
        return (f"mean IoU {_num(_miou(r[0]))} without the skips against {_num(_miou(b[0]))} with them; the "
                f"skips matter most for {_classes(x['classes'], diff, 1)} ({_secs(r)})")
    raise KeyError(label)


def _seed_noise(records: dict) -> float:
    """The largest accuracy difference, in points, between two seeds of the same network: the
    MobileNetV2 exercise trains each of its two versions with seeds 0 and 1."""
    r = records["exercises"]["mobilenet-linear"]["runs"]
    return 100 * max(abs(_acc(r[0]) - _acc(r[2])), abs(_acc(r[1]) - _acc(r[3])))


def _require(claim: bool, what: str) -> None:
    """The key's prose states ``what``; if new records contradict it, the page is not written."""
    if not claim:
        raise SystemExit(f"The instructor's key says {what!r}, and the records no longer show it: rewrite the text")


def _range_lenet(e, records):
    b, r = e["baseline"], e["runs"]
    _require(_acc(r[0]) < 0.11 and _acc(r[1]) > _acc(b[2]) > _acc(b[1]), "0.9 diverges; modern+SGD > d2l+AdamW")
    return (f"At 0.9 the modern network diverges on any machine: the loss turns `nan` in the first epoch and "
            f"the accuracy stays at 10 %, whatever the seed. At 0.1 it trains: {_pct(_acc(r[1]))} here, and a "
            f"student's run should land within about a point of it (seeds move these short runs by up to "
            f"{_seed_noise(records):.1f} points in the MobileNet exercise). The expected conclusion: with its own "
            f"rate, the modern architecture under d2l's plain SGD ({_pct(_acc(r[1]))}) beats d2l's network "
            f"under the chapter's AdamW ({_pct(_acc(b[2]))}), so on this data the architecture is the bigger "
            f"change; but the rate has to be retuned for it, which is the second lesson.")


def _range_mobilenet(e, records):
    r = e["runs"]
    gaps = [100 * (_acc(r[0]) - _acc(r[1])), 100 * (_acc(r[2]) - _acc(r[3]))]
    _require(min(gaps) > _seed_noise(records), "the linear bottleneck was ahead with both seeds, by more than "
             "either version moved between seeds")
    return (f"The linear bottleneck was ahead with both seeds here, by {gaps[0]:.2f} and {gaps[1]:.2f} points, "
            f"while the same version moved by up to {_seed_noise(records):.2f} points between seeds. A student "
            f"should see the linear version ahead by roughly one to three points with most seeds; one seed "
            f"alone can show the reverse, which is why the solution runs two. Each run takes about "
            f"{min(x['wall_seconds'] for x in r) / 60:.0f}-{max(x['wall_seconds'] for x in r) / 60:.0f} min on "
            f"this CPU.")


def _range_resnet(e, records):
    acc = {run["model"].split(" ")[0]: run for run in e["baseline"] + e["runs"]}
    p110, r110, r56 = acc["Plain-110"], acc["ResNet-110"], acc["ResNet-56"]
    _require(_acc(p110) < 0.15 and _acc(r110) > 0.5 and _acc(r110) < _acc(r56),
             "Plain-110 stays at chance; ResNet-110 trains but stays behind ResNet-56")
    return (f"Plain-110 should not train at all in three epochs: its loss stays near ln 10 = 2.30 "
            f"({_num(p110['curves']['train_loss'][-1])} in the last epoch here) and its accuracy at chance "
            f"({_pct(_acc(p110))}), the degradation problem at its extreme. ResNet-110 trains, but after three "
            f"epochs it is still behind ResNet-56 ({_pct(_acc(r110))} against {_pct(_acc(r56))}): the paper's "
            f"small gain from 56 to 110 layers needs its 64,000 iterations. With another seed expect ResNet-110 "
            f"within a few points of ResNet-56, on either side; only one seed was measured here. A student who "
            f"reports Plain-110 above chance has probably built a residual network (`plain=False`).")


def _range_gap(e, records):
    b, r = e["baseline"], e["runs"]
    _require(_acc(r[0]) < _acc(b[0]) - 0.03, "the pooled head ends clearly below the chapter's network")
    return (f"The pooled head should end clearly below the chapter's network: {_pct(_acc(r[0]))} against "
            f"{_pct(_acc(b[0]))} here, and its first epoch's loss is higher too ({_num(_loss1(r[0]))} against "
            f"{_num(_loss1(b[0]))}). A student's run with this recipe should land within a point or two of "
            f"{_pct(_acc(r[0]))}. The parameter count, {e['extras']['params']:,}, is exact and the same "
            f"everywhere. The wrong set-up below is the one students meet most.")


def _range_no_augment(e, records):
    b, r = e["baseline"], e["runs"]
    _require(_gap(r[0]) > _gap(b[0]) + 0.02 and _acc(r[0]) > _acc(b[0]),
             "the gap grows without augmentation, and the test accuracy is higher in this 10-epoch run")
    return (f"The gap between training and test accuracy should grow without augmentation "
            f"({100 * _gap(r[0]):+.2f} points against {100 * _gap(b[0]):+.2f} here). With augmentation the "
            f"training accuracy is measured on the flipped and shifted images, which are harder, so it can sit "
            f"below the test accuracy. The test accuracy itself was higher without augmentation in this "
            f"10-epoch run ({_pct(_acc(r[0]))} against {_pct(_acc(b[0]))}): over-fitting has begun but does not "
            f"cost accuracy yet. Expect the gap to grow with any seed; the test accuracies differ by about a "
            f"point, and the sign of that difference may change with the seed or a longer run.")


def _range_vgg(e, records):
    b, r = e["baseline"], e["runs"]
    _require(_loss1(r[0]) > _loss1(b[0]) and _acc(b[0]) > _acc(r[0]) > _acc(r[1]) > 0.5,
             "without batch norm: a higher first loss, a lower accuracy, lower still at 0.0005; no stall")
    return (f"Without batch norm the network should still train with this recipe (He initialisation, "
            f"AdamW with a warm-up), but start slower: its first epoch's loss is {_num(_loss1(r[0]))} against "
            f"{_num(_loss1(b[0]))}, and it ends {100 * (_acc(b[0]) - _acc(r[0])):.2f} points behind "
            f"({_pct(_acc(r[0]))} against {_pct(_acc(b[0]))}). At 0.0005 it is slower still and ends at "
            f"{_pct(_acc(r[1]))}. It did not stay at chance here; expect the same order with other seeds, the "
            f"gaps within about a point.")


def _range_googlenet(e, records):
    b, r = e["baseline"], e["runs"]
    last = _acc(b[0]) - _acc(r[0])
    first = b[0]["curves"]["test_acc"][0] - r[0]["curves"]["test_acc"][0]
    _require(abs(last) < 0.015, "the final accuracies differ by less than about a point")
    return (f"Expect final accuracies within about a point of each other, in either order: "
            f"{_pct(_acc(r[0]))} without the auxiliary classifiers and {_pct(_acc(b[0]))} with them here. "
            f"The first epoch differs more ({100 * first:+.2f} points for the auxiliary classifiers here) and "
            f"moves with the seed. Students should compare `test_acc` or `train_cross_entropy`, not "
            f"`train_loss`: with the auxiliary classifiers the loss includes 0.3 times theirs, so it is higher "
            f"without meaning a worse network.")


def _range_dice(e, records):
    b, r, x = e["baseline"], e["runs"], e["extras"]
    diff = [d - c for c, d in zip(x["iou_ce"], x["iou_dice"], strict=True)]
    best = x["classes"][max(range(len(diff)), key=diff.__getitem__)]
    _require(_miou(b[0]) > _miou(r[0]) and best == "Sandal", "Dice raises the mean IoU, most for sandals")
    return (f"With Dice the mean IoU should be a little higher ({_num(_miou(b[0]))} against {_num(_miou(r[0]))} "
            f"here), the gain going to thin or small items: sandals most ({diff[x['classes'].index('Sandal')]:+.3f}), "
            f"while the background and the large items (coats, bags) barely change. The pixel accuracy hardly "
            f"moves ({_pct(_acc(b[0]))} against {_pct(_acc(r[0]))}), which is the point of the exercise: it is "
            f"dominated by the background. One seed was measured; expect the same direction with small "
            f"differences, and the ranking of the classes that gain to change with the seed.")


def _range_noskip(e, records):
    b, r, x = e["baseline"], e["runs"], e["extras"]
    _require(_miou(r[0]) < _miou(b[0]) - 0.1, "without skips the mean IoU falls by more than 0.1")
    return (f"Without the skips the mean IoU should fall clearly: {_num(_miou(r[0]))} against "
            f"{_num(_miou(b[0]))} here, while the background stays easy (IoU {x['iou_noskip'][0]:.3f} against "
            f"{x['iou_skips'][0]:.3f}). The classes with thin parts lose most: "
            f"{_classes(x['classes'], [s - n for s, n in zip(x['iou_skips'], x['iou_noskip'], strict=True)], 1)}. "
            f"A drop of well over 0.1 in mean IoU is what to expect; only one seed was measured.")


def _range_effnet(e, records):
    b, r = e["baseline"], e["runs"]
    tr = lambda run: run["curves"]["train_acc"][-1]  # noqa: E731
    _require(tr(r[0]) > tr(b[0]) and _acc(r[0]) > _acc(b[0]), "without them both accuracies are higher")
    return (f"Without stochastic depth and dropout both accuracies should be higher after two epochs: "
            f"training {_pct(tr(r[0]))} against {_pct(tr(b[0]))}, test {_pct(_acc(r[0]))} against "
            f"{_pct(_acc(b[0]))} here. Regularisers cost accuracy in a run too short to over-fit; they pay "
            f"over a long one. One seed was measured; expect a difference of a point or two in the "
            f"same direction. Each run takes about {r[0]['wall_seconds'] / 60:.0f} minutes on this CPU.")


def _range_alexnet(e, records):
    b, r = e["baseline"], e["runs"]
    _require(_loss1(r[0]) < _loss1(b[0]), "with this recipe tanh had the lower first epoch's loss")
    acc = (f"the higher test accuracy after {r[0]['epochs']} epochs ({_pct(_acc(r[0]))} against {_pct(_acc(b[0]))})"
           if _acc(r[0]) > _acc(b[0]) else
           f"ReLU the higher test accuracy after {r[0]['epochs']} epochs ({_pct(_acc(b[0]))} against "
           f"{_pct(_acc(r[0]))}, {100 * (_acc(b[0]) - _acc(r[0])):.2f} points from one seed each; the seed spread "
           f"of this run was not measured)")
    return (f"This recipe does not reproduce the paper's Figure 1: tanh had the lower first epoch's loss "
            f"({_num(_loss1(r[0]))} against {_num(_loss1(b[0]))}) and {acc}. The first-epoch losses differ by "
            f"{_loss1(b[0]) - _loss1(r[0]):.2f}, so expect tanh level with ReLU or ahead early on, not six times "
            f"slower. The answer to look for is the claim (ReLU's faster training, Figure 1) and the "
            f"observation that AdamW, one shared rate and dropout make this a different experiment from the "
            f"paper's (SGD with momentum, a rate tuned per network, no regularisation). A student who reports "
            f"exactly the chapter's ReLU numbers has not replaced the activations (the wrong set-up below). "
            f"Each run takes about {r[0]['wall_seconds'] / 60:.0f} minutes on this CPU.")


RANGE = {  # label -> the key's "what a student should see", written from the records
    "simple-cnn-gap": _range_gap, "simple-cnn-no-augment": _range_no_augment, "lenet-d2l": _range_lenet,
    "alexnet-relu": _range_alexnet, "vgg-no-bn": _range_vgg, "googlenet-no-aux": _range_googlenet,
    "resnet-deeper": _range_resnet, "mobilenet-linear": _range_mobilenet, "effnet-sd": _range_effnet,
    "unet-dice": _range_dice, "unet-noskip": _range_noskip,
}


def _kind(label: str, question: str, solution: str) -> str:
    text = question + solution
    if label in TRAINING:
        return "training"
    if re.search(r"exercises\.check_(number|function)", text):
        return "checked by code: a number or a function"
    if "exercises.check_" in text:
        return "checked by code: a shape or a count"
    return "by hand, in words or in code"


def _table(label: str, e: dict) -> str:
    seg = "test_miou" in (e["runs"][0]["curves"] if e["runs"] else {})
    names_b, names_r = RUN_LABELS[label]
    rows = [("chapter", n, run) for n, run in zip(names_b, e["baseline"][-len(names_b):] if names_b else [],
                                                   strict=True)]
    rows += [("exercise", n, run) for n, run in zip(names_r, e["runs"], strict=True)]
    head = "| | run | epochs | first epoch's cross-entropy | last train acc | test " + \
        ("pixel acc | test mIoU" if seg else "acc") + " | wall time |\n"
    head += "|---|---|--:|--:|--:|--:|" + ("--:|" if seg else "") + "--:|\n"
    body = ""
    for where, name, run in rows:
        c = run["curves"]
        body += (f"| {where} | {name} | {run['epochs']} | {_num(_loss1(run))} | {_pct(c['train_acc'][-1])} "
                 f"| {_pct(c['test_acc'][-1])} |" + (f" {_num(c['test_miou'][-1])} |" if seg else "")
                 + f" {run['wall_seconds']:,.1f} s |\n")
    return head + body


def _section(stem: str, label: str, question: str, solution: str, records: dict) -> str:
    kind = _kind(label, question, solution)
    out = f"### `{label}`\n\n*{kind}* · {{ref}}`the exercise in its chapter <{label}>`\n\n"
    out += f"**Question.** {question}\n\n"
    out += f"**Expected answer** (the chapter's solution).\n\n{solution}\n\n"
    if label not in TRAINING:
        return out
    e = records["exercises"].get(label)
    if e is None or e.get("error"):
        raise SystemExit(f"{label}: no record without error in {RUNS.name}; run `python tools/instructor_key.py "
                         f"run {label}` first")
    m = e["machine"]
    out += (f"**Measured** on {m['device']} ({m['cpu']}), torch {m['torch']}, {m['date']}: the chapter's own "
            f"set-up, then the solution's code as printed above.\n\n{_table(label, e)}\n"
            f"In one sentence, as the chapter's solution quotes it: {summary(label, e)}.\n\n"
            f"**What a student should see.** {RANGE[label](e, records)}\n\n")
    w = e["wrong"]
    out += (f"**A typical wrong set-up** and what it gives:\n\n```python\n{w['code'].rstrip()}\n```\n\n"
            f"`{w['outcome']}`: {w['means']}.\n\n")
    return out


def _time_note(records: dict) -> str:
    """How the repeated chapter runs' times compare with the chapters' own runs (the results table)."""
    from cnn_book import results

    rows = {(row["model"], row["input"], row["epochs"]): row for row in results.load_all()}
    seen, ratios, worst = set(), [], 0.0
    for e in records["exercises"].values():
        for run in e["baseline"]:
            row = rows.get((run["model"], run["input"], run["epochs"]))
            if row and (run["model"], run["input"]) not in seen:
                seen.add((run["model"], run["input"]))
                ratios.append((run["wall_seconds"] / row["wall_seconds"], run["model"]))
                worst = max(worst, abs(_acc(run) - row["test_acc"]))
    if not ratios:
        return ""
    lo, hi = min(ratios), max(ratios)
    same = "the accuracies came out the same" if worst < 5e-5 else \
        f"the accuracies differed by at most {100 * worst:.2f} points"
    return (f"Read the times as rough. The chapters' own runs that the key repeated (as the exercises' "
            f"baselines) took between {lo[0]:.2f} times ({lo[1]}) and {hi[0]:.2f} times ({hi[1]}) the wall time "
            f"the results table recorded for the same run: the machine's two cores were shared with other work "
            f"during some runs; {same}.")


def render_page(records: dict) -> str:
    chapters = sorted(p.stem for p in CHAPTERS.glob("[0-9][0-9]_*.ipynb"))
    counts, sections = [], []
    for stem in chapters:
        nb = json.loads((CHAPTERS / f"{stem}.ipynb").read_text())
        title = next("".join(c["source"]).split("\n", 1)[0].lstrip("# ") for c in nb["cells"]
                     if c["cell_type"] == "markdown")
        exs = exercises(stem)
        kinds = [_kind(lab, q, s) for lab, q, s in exs]
        counts.append((title, len(exs), sum(k.startswith("checked") for k in kinds),
                       sum("number or a function" in k for k in kinds), kinds.count("training")))
        sections.append(f"## {title}\n\n" + "".join(_section(stem, *ex, records) for ex in exs))
    table = "| chapter | exercises | checked by code | of which a number or a function | training |\n"
    table += "|---|--:|--:|--:|--:|\n"
    table += "".join(f"| {t} | {n} | {c} | {b} | {tr} |\n" for t, n, c, b, tr in counts)
    tot = [sum(row[i] for row in counts) for i in range(1, 5)]
    table += f"| **all** | **{tot[0]}** | **{tot[1]}** | **{tot[2]}** | **{tot[3]}** |\n"
    m = records["machine"]
    return f"""---
orphan: true
nosearch: true
---
<!-- Written by `python tools/instructor_key.py page` from the chapters and book/exercise_runs.json:
edit those, not this file. -->

# Instructor's key

*This page is unlisted: the full website builds it but shows it in no menu and no search result,
so that publishing the book does not put the answers in front of a class; a teacher opens it by
its address, `book/instructor_key.html`. `make student` leaves it out altogether.*

Every exercise of every chapter, with the answer a student should reach: the chapter's own
solution, shown here in one place. For the training exercises the key adds what the run gives.
`python tools/instructor_key.py run` ran each chapter's own set-up cells and then each solution's
code exactly as the chapter prints it. It recorded every training run, with its device and its
time, in `book/exercise_runs.json`; the tables below are read from that file. It also ran each
exercise's typical wrong set-up as far as its first error or symptom.
Runs are seeded, so the same machine and library versions give the same numbers. Another CPU,
another thread count or a GPU's recipe (on CUDA the chapters train with their GPU recipes:
longer, wider) gives different numbers. Judge those by the direction and the rough size of the
effect, as the "what a student should see" paragraphs do.

Measured on: {m['device']}, {m['cpu']}, Python {m['python']}, torch {m['torch']}. {_time_note(records)}

{table}
Each checked exercise runs the student's answer through `cnn_book.exercises`, and a wrong answer
gets a hint, not the answer. A teacher can ask for the answer with `reveal=True`, for example
`exercises.check_number("vgg16-rf", 0, reveal=True)`.

{"".join(sections)}"""


QUOTE = "**Measured on this book's CPU**"


def quote_in_chapters(records: dict) -> list[str]:
    """Put each training exercise's measured sentence at the end of its solution in the chapter
    (replacing the one there); return the labels whose chapter changed."""
    import textwrap

    changed = []
    for label, ex in TRAINING.items():
        path = CHAPTERS / f"{ex.chapter}.ipynb"
        nb = json.loads(path.read_text())
        e = records["exercises"][label]
        sentence = (f"{QUOTE} ({e['machine']['device']}; the numbers and times of every run are in "
                    f"{{doc}}`../book/instructor_key`): {summary(label, e)}.")
        para = "\n".join(textwrap.wrap(sentence, 100, break_on_hyphens=False, break_long_words=False))
        for cell in nb["cells"]:
            text = "".join(cell["source"])
            m = re.search(rf"^:::\{{solution\}} {re.escape(label)}\n.*?^:::[ \t]*$", text, re.M | re.S)
            if cell["cell_type"] != "markdown" or not m:
                continue
            block = re.sub(rf"\n{re.escape(QUOTE)}.*?(?=\n\n|\n:::)", "", m.group(0), flags=re.S)
            block = block[: block.rindex(":::")].rstrip("\n") + f"\n\n{para}\n:::"
            new = text[: m.start()] + block + text[m.end():]
            if new != text:
                lines = new.split("\n")
                cell["source"] = [line + "\n" for line in lines[:-1]] + ([lines[-1]] if lines[-1] else [])
                path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")
                changed.append(label)
            break
        else:
            raise SystemExit(f"{label}: no solution block in {path.name}")
    return changed


def write_page() -> Path:
    records = json.loads(RUNS.read_text())
    for label in quote_in_chapters(records):
        print(f"{label}: the measured sentence in its chapter's solution was updated")
    PAGE.write_text(render_page(records))
    return PAGE


def main() -> None:
    args = sys.argv[1:]
    if not args or args[0] not in ("run", "wrong", "page"):
        raise SystemExit(__doc__)
    if args[0] == "wrong":
        rerun_wrong(args[1:] or list(TRAINING), RUNS)
    elif args[0] == "run":
        quick = os.environ.get("CNN_BOOK_QUICK", "0") not in ("", "0")
        run(args[1:] or list(TRAINING), QUICK_RUNS if quick else RUNS)
    else:
        print(f"wrote {write_page()}")


if __name__ == "__main__":
    main()
