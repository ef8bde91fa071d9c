"""fit under torchrun: the shards, the sums over processes, and two gloo processes on the CPU
training exactly as one process with twice the batch."""

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cnn_book import cli, distributed, recipes, text
from cnn_book.distributed import World
from cnn_book.models import get_model
from cnn_book.tasks import Detection, get_task

ROOT = Path(__file__).resolve().parents[1]
WORKER = Path(__file__).with_name("ddp_worker.py")
spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
ddp_worker = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ddp_worker)


def test_world_is_read_from_torchrun_s_variables():
    assert distributed.world({}) == World(0, 1, 0) and not World().distributed and World().main
    w = distributed.world({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"})
    assert (w.rank, w.size, w.local_rank, w.main, w.distributed) == (3, 4, 1, False, True)
    with pytest.raises(ValueError, match="RANK=4 does not fit WORLD_SIZE=4"):
        distributed.world({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(ValueError, match="whole numbers"):
        distributed.world({"RANK": "one", "WORLD_SIZE": "2"})


@pytest.mark.parametrize("n", [96, 97, 100, 103, 17])
@pytest.mark.parametrize("size", [2, 3])
def test_shards_are_disjoint_cover_the_epoch_and_take_equal_steps(n, size):
    data = ddp_worker.synthetic_data(n_train=n, n_test=8)
    data.train_y = torch.arange(n)  # each item's label is its index: what a rank saw, by name
    b = 8
    seen = []
    for rank in range(size):
        batches = data.batches("train", b * size, shuffle=True, generator=torch.Generator().manual_seed(1),
                               merge_single=True)
        ranks = [y for _, y in distributed.shard_batches(batches, World(rank, size))]
        assert all(len(y) >= 2 for y in ranks)  # a batch norm can normalise every slice
        assert len(ranks) == distributed.steps_per_epoch(n, b, World(rank, size))
        seen.append(ranks)
    assert len({len(r) for r in seen}) == 1  # every process takes the same number of steps
    items = torch.cat([y for r in seen for y in r])
    assert sorted(items.tolist()) == list(range(n))  # disjoint and complete
    # step by step, the slices together are the one-process batch of b * size (a small last one merged)
    whole = [y for _, y in data.batches("train", b * size, shuffle=True,
                                        generator=torch.Generator().manual_seed(1), merge_single=True)]
    if len(whole) > 1 and len(whole[-1]) < 2 * size:
        whole = [*whole[:-2], torch.cat(whole[-2:])]
    for slices, y in zip(zip(*seen, strict=True), whole, strict=True):
        assert torch.equal(torch.cat(slices), y)


@pytest.mark.parametrize("n,b", [(10, 4), (9, 4), (8, 4), (1, 4), (5, 1), (129, 128)])
def test_one_process_step_count_is_the_data_s(n, b):
    data = ddp_worker.synthetic_data(n_train=n, n_test=2)
    assert distributed.steps_per_epoch(n, b, World()) == len(list(data.batches("train", b, merge_single=True)))


def test_local_batch_slices_tensors_lists_and_tuples_alike():
    batch = (torch.arange(7), [f"box{i}" for i in range(7)], (torch.arange(7) * 2, torch.zeros(7)))
    parts = [distributed.local_batch(batch, World(r, 3)) for r in range(3)]
    assert [p[0].tolist() for p in parts] == [[0, 1, 2], [3, 4], [5, 6]]
    assert parts[1][1] == ["box3", "box4"] and parts[2][2][0].tolist() == [10, 12]


def test_unused_parameters_are_found_from_the_graph():
    task = get_task("classification")
    lenet = get_model("lenet5")
    x, y = torch.randn(2, 1, 28, 28), torch.tensor([1, 2])
    assert distributed.unused_parameters(lenet, task.loss(lenet, lenet(x), y)[0]) == []
    # BERT's classifier trained on the MLM head's output only: its pooler gets no gradient
    bert = get_model("bert_classifier", num_classes=3, vocab_size=50, hidden_dim=16, num_layers=1, num_heads=2,
                     mlp_dim=32, max_len=8)
    states = bert.bert(torch.randint(5, 50, (2, 8)))[0]
    assert distributed.unused_parameters(bert, states.sum()) == [
        "bert.pooler.dense.weight", "bert.pooler.dense.bias", "classifier.weight", "classifier.bias"]


def _torchrun(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNN_BOOK_PROGRESS": "0", "CNN_BOOK_QUICK": "0",
           "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "--log-dir", str(tmp_path / "logs"), "--redirects", "3", str(WORKER), *args]
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def test_two_processes_train_as_one_with_twice_the_batch(tmp_path, monkeypatch):
    """Six steps of LeNet-5 (augmented, AdamW, one-cycle): two gloo processes with batch 8 each,
    one process with batch 16, from the same seed: the same weights, loss and accuracy."""
    common = ["--recipe", "lenet5", "--epochs", "1", "--device", "cpu"]
    _torchrun(tmp_path, *common, "--batch-size", "8", "--out", str(tmp_path / "two"))
    # only rank 0 wrote, and only rank 0 printed
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["rank0"]
    assert sorted(p.name for p in (tmp_path / "two" / "rank0").iterdir()) == ["history.json", "model.pt"]
    logs = {p.parent.name: p.read_text() for p in (tmp_path / "logs").rglob("stdout.log")}
    assert set(logs) == {"0", "1"} and logs["1"] == ""
    assert "cpu (1 thread) x 2 processes" in logs["0"] and "batch 8 each, 16 per step" in logs["0"]

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    monkeypatch.setattr(recipes, "load_data", lambda recipe: recipe.prepare(ddp_worker.synthetic_data()))
    one = cli.main([*common, "--batch-size", "16", "--out", str(tmp_path / "one")])
    two = json.loads((tmp_path / "two" / "rank0" / "history.json").read_text())
    w1 = torch.load(tmp_path / "one" / "model.pt")
    w2 = torch.load(tmp_path / "two" / "rank0" / "model.pt")
    assert w1.keys() == w2.keys()
    gap = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    print(f"two processes against one: the weights differ by at most {gap:.1e}")
    assert gap < 1e-5, f"the weights differ by up to {gap:.2e}"
    torch.manual_seed(0)  # the weights both runs started from (the command line's seed 0)
    start = get_model("lenet5").state_dict()
    assert min((w1[k] - start[k]).abs().max().item() for k in w1) > 1e-4  # every layer was trained
    assert two["processes"] == 2 and one.processes == 1
    assert two["train_images"] == one.train_images == 96
    assert two["test_acc"] == pytest.approx(one["test_acc"], abs=1e-9)
    assert two["train_loss"] == pytest.approx(one["train_loss"], rel=1e-5)


def test_buffers_and_sums_over_two_processes(tmp_path):
    """Rank 0's batch norm statistics reach every process; tensors and numbers are added, lists
    gathered in rank order, on both ranks alike; the detection task's mAP over the two halves of a
    batch (torchmetrics gathers them) is the mAP of the whole batch on one process."""
    _torchrun(tmp_path, "collectives", str(tmp_path))
    for rank in (0, 1):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        assert got["running_mean"] == [1.0, 1.0, 1.0]  # rank 0's
        assert got["loss"] == [3.0] and got["count"] == 3 and got["count_type"] == "int"
        assert got["items"] == [{"rank": 0}, {"rank": 1}]
        task, (grids, targets) = Detection(), ddp_worker.detection_batch()
        whole = task.metrics(task.score(grids, targets))
        assert got["images"] == len(grids) and got["map"] == pytest.approx(whole) and 0 < whole["map"] < 1


def test_the_benchmark_asks_for_torchrun(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(SystemExit, match="start it with torchrun"):
        distributed.main(["--out", "x.json"])


def test_sums_over_one_process_are_the_sums():
    sums = {"loss": torch.tensor(3.0), "count": 5}
    assert distributed.all_reduce_sums(sums, World()) is sums


def test_the_chapter_s_checkers():
    from cnn_book import exercises

    # ResNet-50's 25,557,032 gradients in fp16 (2 bytes), 4 GPUs
    assert exercises.NUMBERS["ring-allreduce-bytes"].compute() == 2 * 3 / 4 * 2 * 25_557_032
    assert distributed.ring_all_reduce_bytes(10, 1) == 0  # one process sends nothing
    # GPT-2 large and XL: 774,030,080 and 1,557,611,200 parameters (transformers' GPT2LMHeadModel, tied)
    assert exercises.NUMBERS["fsdp-gpt2-large-gib"].compute() == 16 * 774_030_080 / 4 / 2**30
    assert exercises.NUMBERS["fsdp-gpt2-xl-gib"].compute() == 16 * 1_557_611_200 / 8 / 2**30
    lr = exercises.FUNCTIONS["scaled-lr"].reference
    # Goyal et al.: 0.1 per 256 images; 8,192 gives 3.2, reached after the warm-up
    assert lr(0.1, 256, 8192, 0, 100) == 0.1 and lr(0.1, 256, 8192, 100, 100) == pytest.approx(3.2)
    assert lr(0.1, 256, 8192, 50, 100) == pytest.approx(1.65)


def test_the_command_line_lists_the_recipes_and_refuses_an_unknown_one(capsys):
    with pytest.raises(SystemExit):
        cli.main(["--help"])
    out = capsys.readouterr().out
    out = " ".join(out.split())  # argparse wraps the help to the terminal's width
    assert all(name in out for name in recipes.RECIPES) and "torchrun --nproc-per-node N" in out
    with pytest.raises(SystemExit):
        cli.main(["--recipe", "lenet6"])
    assert "invalid choice: 'lenet6'" in capsys.readouterr().err


def test_the_command_line_loads_each_kind_of_recipe_s_data():
    images = recipes.load_data(recipes.get("lenet5", "cpu"))
    assert images.input_shape == (1, 28, 28) and len(images.train_x) == 60_000
    chars = recipes.load_data(recipes.get("gpt_char", "cpu"))
    assert chars.task == "language_model" and chars.input_shape == (64,) and len(chars.train_x) == 58_067
    verses = recipes.load_data(recipes.get("bert_finetune", "cpu"))
    assert verses.task == "classification" and verses.classes == list(text.SECTIONS)
    assert len(verses.train_x) == recipes.DATASETS["kjv_sections"][2]
    blocks = recipes.load_data(recipes.get("bert_mlm", "cpu"))  # 2,048 WordPiece pieces, packed into blocks
    assert blocks.task == "masked_language_model" and blocks.vocab_size == recipes.DATASETS["kjv_masked"][1]
    assert len(blocks.train_x) == recipes.DATASETS["kjv_masked"][2] and blocks.input_shape == (64,)


def test_the_chapter_s_hand_written_ddp_loop_matches_one_process_and_its_checkpoint(tmp_path):
    """Chapter 16's data-parallel loop, written by hand (init_process_group, DistributedSampler
    with set_epoch, DDP, accumulation under no_sync, a rank-0 checkpoint behind a barrier), taken
    from the chapter's %%writefile cell and run with two gloo processes: both load the checkpoint,
    and the weights equal one process's with the combined batch and fit's under torchrun, to
    float32 rounding."""
    nb = json.loads((ROOT / "chapters" / "16_distributed.ipynb").read_text())
    cell = next("".join(c["source"]) for c in nb["cells"]
                if c["cell_type"] == "code" and "".join(c["source"]).startswith("%%writefile"))
    script = tmp_path / "ddp_by_hand.py"
    script.write_text(cell.split("\n", 1)[1])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CNN_BOOK_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    two = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run([*two, str(script), str(tmp_path), "hand"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.count("equal to my weights: True") == 2
    done = subprocess.run([sys.executable, str(script), str(tmp_path), "one"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    done = subprocess.run([*two, str(script), str(tmp_path), "fit"], env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    hand, alone, with_fit = (torch.load(tmp_path / f"{n}.pt") for n in ("hand", "one", "fit"))
    torch.manual_seed(0)
    start = get_model("lenet5").state_dict()
    moved = max((hand[k] - start[k]).abs().max().item() for k in hand)
    assert moved > 0.05  # it trained
    assert max((hand[k] - alone[k]).abs().max().item() for k in hand) < 1e-5
    assert max((hand[k] - with_fit[k]).abs().max().item() for k in hand) < 1e-5  # fit under torchrun
