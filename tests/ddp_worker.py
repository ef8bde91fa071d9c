"""What ``test_distributed.py`` starts under torchrun: the command line ``python -m cnn_book.train``
on a small made-up data set (so that the test needs no download), each rank told to write into its
own folder (``--out DIR`` becomes ``DIR/rank<RANK>``), which shows who wrote."""

import os
import sys

import torch

from cnn_book import cli, recipes, train
from cnn_book.data import ImageData


def synthetic_data(n_train: int = 96, n_test: int = 40, seed: int = 0) -> ImageData:
    """Random 28x28 images with random labels, the same in every process (a fixed seed)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n_train + n_test, 1, 28, 28), generator=g, dtype=torch.uint8)
    y = torch.randint(0, 10, (n_train + n_test,), generator=g)
    return ImageData("made-up images", [str(i) for i in range(10)], x[:n_train], y[:n_train], x[n_train:],
                     y[n_train:])


def run(argv: list[str]) -> train.History:
    recipes.load_data = lambda recipe: recipe.prepare(synthetic_data())
    return cli.main(argv)


def detection_batch(n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Made-up YOLO grids (N, 7, 7, 12) and their targets: one class, two boxes per cell."""
    from cnn_book.data import encode

    g = torch.Generator().manual_seed(seed)
    targets = torch.stack([encode(torch.tensor([[8.0 + i, 10.0, 60.0, 70.0 - i]]), torch.tensor([0]), 112, 7, 2, 2)[0]
                           for i in range(n)])
    return targets + 0.3 * torch.rand(targets.shape, generator=g), targets


def collectives(out: str) -> None:
    """Each rank starts with its own batch norm statistics and its own sums; writes what it has
    after ``broadcast_buffers`` and ``all_reduce_sums``, and the mAP of its half of a detection batch."""
    import json

    from cnn_book import distributed
    from cnn_book.tasks import Detection

    w = distributed.world()
    distributed.init(w, torch.device("cpu"))
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(w.rank + 1.0)
    distributed.broadcast_buffers(bn, w)
    sums = distributed.all_reduce_sums(
        {"loss": torch.tensor([w.rank + 1.0]), "count": w.rank + 1, "items": [{"rank": w.rank}]}, w)
    task, (grids, targets) = Detection(), detection_batch()
    scored = distributed.all_reduce_sums(task.score(grids[w.rank :: w.size], targets[w.rank :: w.size]), w)
    with open(os.path.join(out, f"rank{w.rank}.json"), "w") as f:
        json.dump({"running_mean": bn.running_mean.tolist(), "loss": sums["loss"].tolist(),
                   "count": sums["count"], "count_type": type(sums["count"]).__name__,
                   "items": sums["items"], "images": scored["images"], "map": task.metrics(scored)}, f)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "collectives":
        collectives(args[1])
        sys.exit()
    i = args.index("--out") + 1
    args[i] = os.path.join(args[i], f"rank{os.environ.get('RANK', 0)}")
    run(args)
