"""The command line: ``python -m cnn_book.train --recipe NAME`` trains a recipe of ``cnn_book.recipes``
(the GPU one on CUDA) on its data; under ``torchrun --nproc-per-node N`` on N processes. With
``--out``, rank 0 alone writes the history (``history.json``) and the weights (``model.pt``)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch

from . import distributed, recipes
from .files import atomic_write
from .train import History, fit


def _check_out(parser: argparse.ArgumentParser, out: str | None, writer: bool) -> Path | None:
    """``--out`` as a folder that exists or can be made, and can be written to; refused otherwise.
    Only the process that will write (``writer``: rank 0) makes the folder."""
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        parser.error(f"--out {out} is a file, not a folder: name a folder for history.json and model.pt")
    if not writer:
        return path
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        parser.error(f"--out {out} cannot be made ({e.strerror})")
    if not os.access(path, os.W_OK):
        parser.error(f"--out {out} cannot be written to: name a folder you can write to")
    return path


def _strict(value):
    """``value`` with every NaN and infinity as None: strict JSON (a run that diverged has them)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_strict(v) for v in value]
    return value


def save(hist: History, model: torch.nn.Module, out: Path) -> None:
    """``out/history.json`` and ``out/model.pt``, each written to a temporary file and renamed: a full
    disk or Ctrl-C during the save leaves the files of the previous run as they were."""
    with atomic_write(out / "model.pt") as f:
        torch.save(model.state_dict(), f)
    with atomic_write(out / "history.json", "w") as f:
        f.write(json.dumps(_strict(hist.to_dict()), indent=1, default=str, allow_nan=False) + "\n")


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
    for name in ("epochs", "batch_size", "train_images"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    if args.lr is not None and not (args.lr > 0 and math.isfinite(args.lr)):
        parser.error(f"--lr must be a positive, finite number, got {args.lr}")
    world = distributed.world()
    out = _check_out(parser, args.out, world.main)  # before any work: a path that cannot take the files is refused
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
        if out is not None and world.main:
            save(hist, model, out)
            print(f"Wrote {out / 'history.json'} and {out / 'model.pt'}")
    finally:
        if world.distributed and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return hist
