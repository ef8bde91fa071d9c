"""The command line: ``python -m cnn_book.train --recipe NAME`` trains a recipe of ``cnn_book.recipes``
(the GPU one on CUDA) on its data; under ``torchrun --nproc-per-node N`` on N processes. With
``--out``, rank 0 alone writes the history (``history.json``) and the weights (``model.pt``)."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path

import torch

from . import distributed, recipes
from .train import History, fit


def main(argv: list[str] | None = None) -> History:
    """Parse ``argv`` (default: the command line's), train, write ``--out``; return the ``History``."""
    names = list(recipes.RECIPES)
    parser = argparse.ArgumentParser(
        prog="python -m cnn_book.train",
        description="Train a recipe of cnn_book.recipes (the GPU one on CUDA) on its data; under torchrun, "
                    "on N processes with DistributedDataParallel.",
        epilog="recipes: " + ", ".join(names) + ". Many processes: torchrun --nproc-per-node N -m cnn_book.train ...")
    parser.add_argument("--recipe", required=True, metavar="NAME", choices=names, help="the recipe's name")
    parser.add_argument("--epochs", type=int, help="instead of the recipe's")
    parser.add_argument("--batch-size", type=int, help="per process, instead of the recipe's")
    parser.add_argument("--lr", type=float, help="instead of the recipe's")
    parser.add_argument("--train-images", type=int, help="the first N training items only")
    parser.add_argument("--device", help="cpu, cuda, ... (default: cuda if there is one; under torchrun "
                                         "the GPU of the process's LOCAL_RANK)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", help="a folder for history.json and model.pt (written by rank 0 only)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    world = distributed.world()
    recipe = recipes.get(args.recipe, args.device)
    changes = {k: v for k, v in (("epochs", args.epochs), ("batch_size", args.batch_size), ("lr", args.lr),
                                 ("train_images", args.train_images)) if v is not None}
    recipe = replace(recipe, **changes)
    if world.main:
        print(f"Recipe {args.recipe}: {recipe}")
    torch.manual_seed(args.seed)  # the same initial weights in every process (DDP copies rank 0's anyway)
    model = recipe.build()
    try:
        hist = fit(model, recipes.load_data(recipe), device=args.device, seed=args.seed, **recipe.fit_args)
        if args.out and world.main:
            out = Path(args.out)
            out.mkdir(parents=True, exist_ok=True)
            (out / "history.json").write_text(json.dumps(hist.to_dict(), indent=1, default=str))
            torch.save(model.state_dict(), out / "model.pt")
            print(f"Wrote {out / 'history.json'} and {out / 'model.pt'}")
    finally:
        if world.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return hist
