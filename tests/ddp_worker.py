"""What ``test_distributed.py`` starts under torchrun: the command line ``python -m cnn_book.train``
on a small made-up data set (so that the test needs no download), each rank told to write into its
own folder (``--out DIR`` becomes ``DIR/rank<RANK>``), which shows who wrote."""

import os
import sys

import torch

from cnn_book import recipes, train
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
    return train.main(argv)


def collectives(out: str) -> None:
    """Each rank starts with its own batch norm statistics and its own sums; writes what it has
    after ``broadcast_buffers`` and ``all_reduce_sums``."""
    import json

    from cnn_book import distributed
    from cnn_book.tasks import _Detections

    w = distributed.world()
    distributed.init(w, torch.device("cpu"))
    bn = torch.nn.BatchNorm1d(3)
    bn.running_mean.fill_(w.rank + 1.0)
    distributed.broadcast_buffers(bn, w)
    sums = distributed.all_reduce_sums(
        {"loss": torch.tensor([w.rank + 1.0]), "count": w.rank + 1,
         "detections": _Detections([{"rank": w.rank}], [{"truth": w.rank}])}, w)
    with open(os.path.join(out, f"rank{w.rank}.json"), "w") as f:
        json.dump({"running_mean": bn.running_mean.tolist(), "loss": sums["loss"].tolist(),
                   "count": sums["count"], "count_type": type(sums["count"]).__name__,
                   "preds": sums["detections"].preds, "targets": sums["detections"].targets}, f)
    torch.distributed.destroy_process_group()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args[0] == "collectives":
        collectives(args[1])
        sys.exit()
    i = args.index("--out") + 1
    args[i] = os.path.join(args[i], f"rank{os.environ.get('RANK', 0)}")
    run(args)
