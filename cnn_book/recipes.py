"""Every chapter's training settings, for a CPU and for a GPU, side by side.

Like torchvision's reference-training tables: one row per run a chapter makes, the CPU recipe
(what the committed pages ran, on the book's 2-core machine) next to the GPU one (what a Colab
reader on a T4 gets, in fp16). A chapter reads its recipe; it does not type one in:

    recipe = recipes.get("alexnet")          # the GPU recipe on CUDA, the CPU one elsewhere
    model = recipe.build()
    history = train.fit(model, recipe.prepare(data), **recipe.fit_args)

Every GPU recipe is built at its real size and takes one forward and backward step on the CPU
in the tests, so a shape or an option that does not fit fails there, not in a reader's Colab.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
from torch import nn

from .device import default_device
from .settings import fold

# What each data set feeds a model before resizing: (C, H, W), classes, training images, task.
DATASETS = {
    "fashion_mnist": ((1, 28, 28), 10, 60_000, "classification"),
    "fashion_mnist_scenes": ((1, 64, 64), 11, 20_000, "segmentation"),  # data.fashion_mnist_scenes()
    "fashion_mnist_imagenet": ((3, 28, 28), 10, 60_000, "classification"),  # transfer.imagenet_view(fashion_mnist)
    "fashion_mnist_binary": ((1, 28, 28), 10, 60_000, "generative"),  # data.binarize(fashion_mnist)
    "fashion_mnist_detection": ((1, 112, 112), 10, 10_000, "detection"),  # canvases of items, built from it
    "neon_trees": ((3, 112, 112), 1, 1_720, "detection"),  # data.neon_trees(): tiles of aerial photos, tree crowns
    # text (cnn_book.text): (sequence length,), vocabulary or classes, training sequences, task
    "kjv_chars": ((64,), 63, 58_067, "language_model"),  # the King James Bible's characters, windows of 64
    "kjv_masked": ((64,), 2048, 15_527, "masked_language_model"),  # WordPiece blocks of 64, masked (BERT's rule)
    "kjv_sections": ((64,), 6, 27_961, "classification"),  # a verse (WordPiece, padded) -> its part of the canon
    "reversal": ((20,), 11, 20_000, "language_model"),  # text.reversal_data(): 10 symbols, then 10 decoder inputs
}
# Text sets: the sequence length comes from the model's options (GPT's block_size, BERT's max_len).
TEXT = {"kjv_chars", "kjv_masked", "kjv_sections", "reversal"}


def _imagenet_view(data, recipe):
    from .transfer import imagenet_view

    return imagenet_view(data, size=recipe.size or 28)  # 3 channels and ImageNet's statistics, for its weights


def _binary_view(data, recipe):
    from .data import binarize

    return binarize(data)  # 0/1 pixels for a Bernoulli likelihood: test images fixed, training ones per batch


def _detection_canvases(data, recipe):
    from .data import DetectionData, fashion_mnist_detection
    from .settings import quick_mode

    n = recipe.train_images or DATASETS[recipe.data][2]
    canvas = recipe.size or DATASETS[recipe.data][0][-1]
    k = canvas / DATASETS[recipe.data][0][-1]  # items grow with the canvas: 448 px holds them 4x larger
    # quick mode builds only the training canvases it trains on (all test canvases: the chapter counts them)
    return fashion_mnist_detection(data, n_train=min(n, DetectionData.quick_limit) if quick_mode() else n,
                                   canvas=canvas, scale=(0.75 * k, 1.5 * k))


# The data sets that are a view of Fashion-MNIST: how ``Recipe.prepare`` makes them from it.
VIEWS = {"fashion_mnist_imagenet": _imagenet_view, "fashion_mnist_binary": _binary_view}
# The sets built from Fashion-MNIST's items, whose ``train_images`` and ``size`` are those of what they build.
BUILT = {"fashion_mnist_detection": _detection_canvases}


@dataclass(frozen=True)
class Recipe:
    """One training run: the model and its options, the input, and ``fit``'s settings."""

    model: str
    options: dict = field(default_factory=dict)  # keyword arguments of the model's builder
    data: str = "fashion_mnist"
    size: int | None = None  # images resized to size x size (bilinear, on the device)
    pad: int = 0  # a zero border of this many pixels (LeNet-1998's 32x32, VGG's 32x32)
    train_images: int | None = None  # the first N training images only (the chapters' experiments)
    epochs: int = 10
    batch_size: int = 128
    optimizer: str = "adamw"
    lr: float = 2e-3
    weight_decay: float = 5e-4
    augment: bool = True
    loss: str | None = None  # None: the task's own (cross-entropy)
    log_every: int = 20
    momentum: float = 0.9  # SGD's (Nesterov); 0 is plain SGD
    schedule: str = "one-cycle"  # or "warmup-linear" (BERT's) or "constant"
    betas: tuple = (0.9, 0.999)  # AdamW's; RoBERTa's pre-training took (0.9, 0.98)
    eps: float = 1e-8  # AdamW's; BERT's was 1e-6
    init: str | None = None  # None: PyTorch's default; "xavier_uniform" for conv and linear weights (d2l's)
    lr_scale: dict | None = None  # other rates by layer-name prefix, {"features": 0.1} (fine-tuning)
    grad_clip: float | None = None  # the gradients' global norm clipped to this (the Transformers' custom)
    decay: str = "all"  # weight decay on "all" parameters, or on the weight "matrices" only (the Transformers')
    eval_every: int | None = None  # held-out loss every so many steps (nanoGPT's estimate_loss)
    keep_best: bool = False  # end with the weights of the best of those evaluations

    @property
    def input_shape(self) -> tuple[int, ...]:
        if self.data in TEXT:  # (T,): token ids; an encoder-decoder's rows hold its source and its decoder's input
            if self.options.get("source_len"):
                return (2 * self.options["source_len"],)
            return (self.options.get("block_size") or self.options.get("max_len") or DATASETS[self.data][0][0],)
        c, h, w = DATASETS[self.data][0]
        return (c, self.size, self.size) if self.size else (c, h + 2 * self.pad, w + 2 * self.pad)

    @property
    def task(self) -> str:
        return DATASETS[self.data][3]

    @property
    def images_per_epoch(self) -> int:
        return min(self.train_images or DATASETS[self.data][2], DATASETS[self.data][2])

    @property
    def fit_args(self) -> dict:
        """The keyword arguments of ``train.fit``."""
        return {"epochs": self.epochs, "batch_size": self.batch_size, "optimizer": self.optimizer, "lr": self.lr,
                "weight_decay": self.weight_decay, "augment": self.augment, "loss": self.loss,
                "log_every": self.log_every, "momentum": self.momentum, "schedule": self.schedule,
                "betas": self.betas, "eps": self.eps,
                "lr_scale": self.lr_scale, "grad_clip": self.grad_clip, "decay": self.decay,
                "eval_every": self.eval_every, "keep_best": self.keep_best}

    def build(self, **options) -> nn.Module:
        """The model, with the recipe's options (``options`` override them: a chapter's sweeps)."""
        from .models import get_model

        model = get_model(self.model, **{**self.options, **options})
        if self.init == "xavier_uniform":
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)):
                    nn.init.xavier_uniform_(m.weight)
        elif self.init is not None:
            raise ValueError(f"init must be None or 'xavier_uniform', got {self.init!r}")
        return model

    def prepare(self, data):
        """``data`` as the recipe feeds it: the training subset, then the padding or resizing (or, for
        a set built from Fashion-MNIST, that set at the recipe's size)."""
        if self.data in BUILT:
            return BUILT[self.data](data, self)
        if self.train_images is not None:
            data = replace(data, train_x=data.train_x[: self.train_images], train_y=data.train_y[: self.train_images])
        if self.data in VIEWS:
            return VIEWS[self.data](data, self)
        return data.with_input(size=self.size, pad=self.pad) if self.size or self.pad else data

    def __str__(self) -> str:
        opts = ", ".join(f"{k}={v}" for k, v in self.options.items() if k not in ("num_classes", "in_channels"))
        shape = "x".join(map(str, self.input_shape)) + (" tokens" if self.data in TEXT else "")
        unit = "sequences" if self.data in TEXT else "images"
        subset = f" (first {self.train_images:,} training {unit})" if self.train_images else ""
        # two lines, each folded to the page column: what trains, then how
        what = fold(f"{self.model}({opts}) at {shape}{subset}:")
        how = fold(f"  {self.epochs} epochs, batch {self.batch_size}, "
                f"{'plain sgd' if self.optimizer == 'sgd' and not self.momentum else self.optimizer} lr {self.lr:g}"
                f"{'' if self.schedule == 'one-cycle' else ' ' + self.schedule} wd {self.weight_decay:g}"
                f"{' (matrices only)' if self.decay == 'matrices' and self.weight_decay else ''}"
                f"{f', betas {self.betas}, eps {self.eps:g}' if (self.betas, self.eps) != ((0.9, 0.999), 1e-8) else ''}"
                f"{', augmented' if self.augment else ''}{f', {self.init} init' if self.init else ''}"
                f"{f', loss {self.loss}' if self.loss else ''}"
                f"{''.join(f', {k} at {v:g} x lr' for k, v in (self.lr_scale or {}).items())}"
                f"{f', held-out loss every {self.eval_every} steps' if self.eval_every else ''}"
                f"{' (best kept)' if self.keep_best else ''}")
        return f"{what}\n{how}"


def _gpu(cpu: Recipe, options: dict | None = None, **changes) -> dict[str, Recipe]:
    """The row of a run: its CPU recipe, and the GPU one that differs from it by ``changes``."""
    return {"cpu": cpu, "gpu": replace(cpu, options={**cpu.options, **(options or {})}, **changes)}


_FMNIST = {"num_classes": 10, "in_channels": 1}
# 15: the small BERT (4 blocks, width 128, 4 heads, 64 positions, 2,048 WordPiece pieces), its GPU size, and
# the Transformers' optimiser settings: weight decay 0.01 on the matrices, BERT's schedule, clipped gradients
_BERT = {"vocab_size": 2048, "hidden_dim": 128, "num_layers": 4, "num_heads": 4, "mlp_dim": 512, "max_len": 64}
_BERT_GPU = {"hidden_dim": 256, "num_layers": 6, "num_heads": 8, "mlp_dim": 1024}
_BERT_OPT = {"weight_decay": 0.01, "decay": "matrices", "schedule": "warmup-linear", "grad_clip": 1.0,
             "augment": False}

# chapter run -> {"cpu": Recipe, "gpu": Recipe}; the GPU column lists only what differs.
RECIPES: dict[str, dict[str, Recipe]] = {
    # 01, 02: small enough that a CPU runs the full recipe
    "simple_cnn": _gpu(Recipe("simple_cnn", epochs=10, lr=2e-3)),
    "lenet5": _gpu(Recipe("lenet5", epochs=15, lr=3e-3)),
    # 02's exercise: d2l's LeNet as d2l v0.17.5 trains it (sigmoid, average pooling, Xavier init, plain SGD at a
    # constant 0.9, batch 256, 10 epochs, no weight decay or augmentation)
    "lenet5_d2l": _gpu(Recipe("lenet5", {"activation": "sigmoid", "pool": "avg"}, epochs=10, batch_size=256,
                              optimizer="sgd", momentum=0.0, schedule="constant", lr=0.9, weight_decay=0.0,
                              augment=False, init="xavier_uniform")),
    "lenet5_1998": _gpu(Recipe("lenet5", {"variant": "1998"}, pad=2, epochs=10, lr=3e-3)),
    # 03: the paper's 224x224 on a GPU; 64x64 (a 1x1 map before the classifier) on a CPU
    # 03: the paper's geometry at 224x224 (pool5 a 6x6 map) on both; a quarter of the kernels and
    # fc6/fc7 of 1,024 on a CPU, where the full network trains at about 60 images/s
    "alexnet": _gpu(Recipe("alexnet", {**_FMNIST, "width_mult": 0.25, "classifier_width": 1024},
                           size=224, epochs=3, lr=1e-3),
                    options={"width_mult": 1.0, "classifier_width": 4096}, epochs=10),
    # 04: VGG-11 with BN at 32x32, a quarter of the widths on a CPU
    "vgg11_bn": _gpu(Recipe("vgg11_bn", {**_FMNIST, "width_mult": 0.25, "classifier_width": 512,
                                         "pool_size": None, "input_size": 32}, pad=2, epochs=6),
                     options={"width_mult": 1.0}, epochs=10),
    # 05, 06: the small-input stems at 28x28
    "googlenet": _gpu(Recipe("googlenet", {**_FMNIST, "small_input": True, "width_mult": 0.25}, epochs=3),
                      options={"width_mult": 1.0}, epochs=10),
    "resnet_cifar": _gpu(Recipe("resnet_cifar", {"depth": 20, "plain": False, "in_channels": 1}, size=14,
                                train_images=20_000, epochs=3, optimizer="sgd", lr=0.1, weight_decay=1e-4,
                                augment=False, log_every=10)),  # the degradation experiment: same on both
    "resnet18": _gpu(Recipe("resnet18", {**_FMNIST, "small_input": True, "widths": (16, 32, 64, 128)}, epochs=4),
                     options={"widths": (64, 128, 256, 512)}, epochs=10),
    # 07: SGD with little weight decay, as the MobileNet paper advises
    "mobilenet_v1_sweep": _gpu(Recipe("mobilenet_v1", {**_FMNIST, "alpha": 0.5, "small_input": True},
                                      train_images=20_000, epochs=2, optimizer="sgd", lr=0.1, weight_decay=5e-5,
                                      augment=False)),  # the alpha and resolution sweeps: same on both
    "mobilenet_v1": _gpu(Recipe("mobilenet_v1", {**_FMNIST, "alpha": 0.5, "small_input": True}, epochs=6,
                                optimizer="sgd", lr=0.1, weight_decay=5e-5),
                         options={"alpha": 1.0}, epochs=15),
    # 08: B0 unchanged, at 64x64 so that its 32x downsampling ends on a 2x2 grid
    "efficientnet_b0": _gpu(Recipe("efficientnet_b0", _FMNIST, size=64, epochs=2), epochs=10),
    # 10: MobileNetV2 with its ImageNet weights and a new head, fine-tuned (the pretrained layers at a
    # tenth of the rate); the chapter also trains it from scratch (weights=None) and as a linear probe.
    # 64x64 on a CPU (its 32-fold downsampling ends on 2x2), ImageNet's 224x224 on a GPU.
    "mobilenet_v2_transfer": _gpu(Recipe("mobilenet_v2", {"num_classes": 10, "weights": "IMAGENET1K_V1",
                                                          "partial": True},
                                         data="fashion_mnist_imagenet", size=64, epochs=1, batch_size=64, lr=1e-3,
                                         lr_scale={"features": 0.1}),
                                  size=224, epochs=3),
    # 09: the same network from random weights, every layer at the same rate (the fine-tuning recipe's
    # tenth for the pretrained layers protects what they know; random layers have nothing to protect)
    "mobilenet_v2_scratch": _gpu(Recipe("mobilenet_v2", {"num_classes": 10}, data="fashion_mnist_imagenet",
                                        size=64, epochs=1, batch_size=64, lr=1e-3),
                                 size=224, epochs=3),
    # 11: the VAE on binarised Fashion-MNIST, batches of 100 as in the paper; Adam instead of its Adagrad, no
    # weight decay (the paper's is a N(0, I) prior on the weights, negligible next to 60,000 images' likelihood)
    "vae": _gpu(Recipe("vae", {"latent_size": 16}, data="fashion_mnist_binary", epochs=10, batch_size=100, lr=1e-3,
                       weight_decay=0.0, augment=False), epochs=50),
    "vae_2d": _gpu(Recipe("vae", {"latent_size": 2}, data="fashion_mnist_binary", epochs=10, batch_size=100, lr=1e-3,
                          weight_decay=0.0, augment=False), epochs=50),  # the pictures of the latent plane
    # the plain autoencoder of the same shape (no logvar head, no KL), trained the same way beside vae_2d
    "autoencoder_2d": _gpu(Recipe("vae", {"latent_size": 2, "variational": False}, data="fashion_mnist_binary",
                                  epochs=10, batch_size=100, lr=1e-3, weight_decay=0.0, augment=False), epochs=50),
    "vae_paper": _gpu(Recipe("vae", {"variant": "paper", "latent_size": 20}, data="fashion_mnist_binary", epochs=10,
                             batch_size=100, lr=1e-3, weight_decay=0.0, augment=False), epochs=50),
    "vae_beta": _gpu(Recipe("vae", {"variant": "paper", "latent_size": 20}, data="fashion_mnist_binary",
                            train_images=20_000, epochs=3, batch_size=100, lr=1e-3, weight_decay=0.0,
                            augment=False)),  # the beta sweep (the task's beta): same on both
    # 09: the padded U-Net on 64x64 scenes of Fashion-MNIST items
    "unet": _gpu(Recipe("unet", {"num_classes": 11, "in_channels": 1, "base_width": 16, "padding": "same"},
                        data="fashion_mnist_scenes", epochs=3, batch_size=64, lr=3e-3, loss="cross_entropy+dice"),
                 options={"base_width": 64}, epochs=10),
    # 12: YOLO v1 on 112x112 canvases of Fashion-MNIST items, in the small form on a CPU; on a GPU the paper's
    # network (24 convolutions, 271 M parameters with 20 classes) at its 448x448, the items drawn 4x larger.
    # Adam at 1e-3 (1e-4 for the deep network without batch norm) instead of the paper's SGD with a warm-up.
    "yolo": _gpu(Recipe("yolov1", {**_FMNIST, "variant": "small"}, data="fashion_mnist_detection", epochs=20,
                        batch_size=64, lr=1e-3, augment=False),
                 options={"variant": "paper"}, size=448, epochs=30, batch_size=32, lr=1e-4),
    "yolo_trees": _gpu(Recipe("yolov1", {"num_classes": 1, "in_channels": 3, "variant": "small"}, data="neon_trees",
                              epochs=20, batch_size=32, lr=1e-3, augment=False)),  # the same on both
    # 13: a small ViT (4x4 patches, 6 blocks, width 128, 4 heads; 805 k parameters), AdamW with ViT's usual
    # weight decay, 0.05. On the book's CPU its 2 epochs take about as long as the 4 of the "resnet18" recipe
    # (701 k parameters), which the chapter compares it with; on a GPU it trains for 50.
    "vit": _gpu(Recipe("vit", {"num_classes": 10, "in_channels": 1}, epochs=2, lr=1e-3, weight_decay=0.05,
                       decay="matrices"),
                epochs=50, batch_size=256),
    # 13: the encoder-decoder Transformer (post-norm, shared embeddings) reversing 10 symbols: 2 layers of
    # each, width 64, 4 heads; AdamW with warm-up (one-cycle), decay on the matrices, clipped gradients
    "transformer_reverse": _gpu(Recipe("transformer", {"vocab_size": 11, "d_model": 64, "num_heads": 4,
                                                       "d_ff": 256, "num_layers": 2, "dropout": 0.1,
                                                       "source_len": 10, "max_len": 16},
                                       data="reversal", epochs=3, batch_size=128, lr=3e-3, weight_decay=0.01,
                                       augment=False, grad_clip=1.0, decay="matrices")),  # the same on both
    # 14: GPT on the King James Bible's characters. The CPU recipe is nanoGPT's (4 layers, 4 heads, width 128,
    # 64 characters of context, no dropout), one pass over the training text; the GPU one nanoGPT's
    # shakespeare_char (6 layers, 6 heads, width 384, 256 characters, dropout 0.2). AdamW with GPT's weight
    # decay 0.1 on the weight matrices and embeddings only (nanoGPT's rule), gradients clipped at 1.
    "gpt_char": _gpu(Recipe("gpt2", {"vocab_size": 63, "block_size": 64, "num_layers": 4, "num_heads": 4,
                                     "hidden_dim": 128}, data="kjv_chars", epochs=1, batch_size=32, lr=1e-3,
                            weight_decay=0.1, augment=False, log_every=50, grad_clip=1.0, decay="matrices",
                            eval_every=200, keep_best=True),
                     options={"block_size": 256, "num_layers": 6, "num_heads": 6, "hidden_dim": 384, "dropout": 0.2},
                     epochs=10, batch_size=64),
    # 15: a small BERT pre-trained on WordPiece blocks of the same text (2,048 pieces) with settings for a small
    # budget (Cramming, Geiping & Goldstein 2022: no dropout, the MLM head at the masked positions only, task
    # "masked_language_model", a peak rate of 1e-3; RoBERTa's beta2 0.98, BERT's eps 1e-6 and schedule, a linear
    # warm-up and decay), decay on the matrices, clipped gradients; 24 passes (11,664 steps).
    # Then fine-tuned to tell which part of the canon a verse is from (dropout 0.1, lr 1e-4), beside the same
    # classifier from random weights at its own best rate (3e-4); the GPU model is wider and deeper.
    "bert_mlm": _gpu(Recipe("bert", {**_BERT, "dropout": 0.0}, data="kjv_masked", epochs=24, batch_size=32, lr=1e-3,
                            **_BERT_OPT, betas=(0.9, 0.98), eps=1e-6, log_every=50, eval_every=500),
                     options=_BERT_GPU, epochs=40, batch_size=256),
    "bert_finetune": _gpu(Recipe("bert_classifier", {"num_classes": 6, **_BERT}, data="kjv_sections", epochs=1,
                                 batch_size=32, lr=1e-4, **_BERT_OPT),
                          options=_BERT_GPU, epochs=3, batch_size=128),
    "bert_scratch": _gpu(Recipe("bert_classifier", {"num_classes": 6, **_BERT}, data="kjv_sections", epochs=1,
                                batch_size=32, lr=3e-4, **_BERT_OPT),
                         options=_BERT_GPU, epochs=3, batch_size=128),
    "bag_of_words": _gpu(Recipe("bag_of_words", {"num_classes": 6, "vocab_size": 2048, "max_len": 64},
                                data="kjv_sections", epochs=5, batch_size=64, lr=1e-2, weight_decay=0.0,
                                augment=False)),  # the baseline: the same on both
}


def get(name: str, device: torch.device | str | None = None) -> Recipe:
    """The recipe of run ``name`` for ``device`` (default: ``device.default_device()``): the GPU
    one on CUDA, the CPU one on a CPU or Apple's MPS."""
    if name not in RECIPES:
        raise ValueError(f"no recipe named {name!r}; the recipes are {', '.join(RECIPES)}")
    if device is None:
        device = default_device()
    return RECIPES[name]["gpu" if torch.device(device).type == "cuda" else "cpu"]


def load_data(recipe: Recipe):
    """The data ``recipe`` trains on, loaded and prepared as its chapter does (the command line's
    ``python -m cnn_book.train --recipe NAME``); on the CPU, ``fit`` moves it to its device."""
    from . import data

    if recipe.data in TEXT:
        text_data = _text_data(recipe)
        n = recipe.train_images
        return text_data if n is None else replace(text_data, train_x=text_data.train_x[:n],
                                                   train_y=text_data.train_y[:n])
    if recipe.data == "fashion_mnist_scenes":
        return recipe.prepare(data.fashion_mnist_scenes())
    if recipe.data == "neon_trees":
        return recipe.prepare(data.neon_trees())
    return recipe.prepare(data.load_fashion_mnist())  # and the views and canvases made from it


def _text_data(recipe: Recipe):
    """Chapter 14's characters, or chapter 15's WordPiece blocks (masked) or verses (by part)."""
    from . import text

    train, val = text.split_verses(text.kjv_verses())
    length = recipe.input_shape[0]
    if recipe.data == "kjv_chars":
        train_text, val_text = ("\n".join(v.text for v in vs) + "\n" for vs in (train, val))
        chars = text.CharTokenizer(train_text + val_text)
        return text.causal_lm_data(chars.encode(train_text), chars.encode(val_text), length, chars.vocab_size,
                                   name="KJV characters")
    tok = text.train_wordpiece([v.text for v in train], vocab_size=recipe.options["vocab_size"])
    vocab = tok.get_vocab_size()
    if recipe.data == "kjv_masked":
        cls_id, sep_id, mask_id = (tok.token_to_id(t) for t in ("[CLS]", "[SEP]", "[MASK]"))
        blocks = [text.pack([e.ids for e in tok.encode_batch([v.text for v in vs], add_special_tokens=False)],
                            length, cls_id, sep_id) for vs in (train, val)]
        return text.masked_lm_data(*blocks, text.Masking(mask_id, vocab, special_ids=tuple(range(5))),
                                   name="KJV WordPiece blocks")
    sections = list(text.SECTIONS)
    pad_id = tok.token_to_id("[PAD]")
    ids = [text.pad_batch([e.ids for e in tok.encode_batch([v.text for v in vs])], length, pad_id)[0]
           for vs in (train, val)]
    labels = [[sections.index(v.section) for v in vs] for vs in (train, val)]
    return text.classification_data(ids[0], labels[0], ids[1], labels[1], sections, vocab, pad_id,
                                    name="KJV verses by part")


def one_step(recipe: Recipe, batch_size: int = 2, device: torch.device | str = "cpu") -> float:
    """Build the recipe's model at its real size and take one training forward and backward pass on
    a random batch at its real input size, through its task's loss; return the loss."""
    from .tasks import get_task

    torch.manual_seed(0)
    model = recipe.build().to(device).train()
    task = get_task(recipe.task, loss=recipe.loss)
    x, y = task.random_batch(batch_size, recipe.input_shape, DATASETS[recipe.data][1], device)
    if getattr(model, "input_dtype", None) == torch.long:  # token ids, not pixels
        x = torch.randint(0, model.vocab_size, (batch_size, *recipe.input_shape), device=device)
    if getattr(model, "source_len", None):  # an encoder-decoder scores the target half of each row
        y = y[:, : model.source_len]
    loss, _ = task.loss(model, task.forward(model, x, y), y)
    loss.backward()
    return loss.item()


def train_flops(recipe: Recipe) -> int:
    """FLOPs of one training epoch, about 3x the forward pass of every training image: the backward
    pass computes a gradient for the input and one for the weights of each layer, each costing what
    the forward did. The forward is counted by ``torch.utils.flop_counter`` on a batch of 2 in
    training mode (auxiliary heads included; BERT's MLM head at its masked positions only, as the
    task asks), 2 FLOPs per mult-add. Not the counter's backward: it counts a depthwise
    convolution's backward as a dense one's (EfficientNet-B0's backward came out 41x its forward,
    torch 2.14)."""
    from torch.utils.flop_counter import FlopCounterMode

    from .tasks import get_task

    torch.manual_seed(0)
    model = recipe.build().train()
    x = torch.zeros(2, *recipe.input_shape, dtype=getattr(model, "input_dtype", torch.float32))
    task = get_task(recipe.task, loss=recipe.loss)
    _, y = task.random_batch(2, recipe.input_shape, DATASETS[recipe.data][1])
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        task.forward(model, x, y)
    return 3 * counter.get_total_flops() // 2 * recipe.images_per_epoch
