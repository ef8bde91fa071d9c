"""Numbers: what the package computes for an exercise, and how close an answer must be."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from ..inspect import count_parameters
from ._report import _report


@dataclass(frozen=True)
class Number:
    what: str
    compute: Callable[[], float]
    hint: str
    rel_tol: float = 0.0  # 0: the answer must be exact (after rounding to the unit)
    unit: str = ""


def _vgg16_pool5_rf() -> float:
    from ..inspect import receptive_fields
    from ..models import get_model

    with torch.device("meta"):
        vgg = get_model("vgg16")
    return receptive_fields(vgg.features, torch.zeros(1, 3, 224, 224, device="meta"))["30"]


def _share(model_name: str, select: Callable[[str, nn.Module], bool]) -> float:
    """Percent of ``model_name``'s parameters in the submodules ``select(name, module)`` picks."""
    from ..models import get_model

    with torch.device("meta"):
        m = get_model(model_name)
    inside = sum(count_parameters(sub) for name, sub in m.named_modules() if select(name, sub))
    return 100 * inside / count_parameters(m)


def _is_se(name: str, module: nn.Module) -> bool:
    from ..models.blocks import SqueezeExcitation

    return isinstance(module, SqueezeExcitation)


def _alexnet_flops_ratio() -> float:
    """Forward FLOPs of the chapter's AlexNet (1 channel, 10 classes) at 224x224 against 64x64."""
    from ..inspect import flops_by_module
    from ..models import get_model

    flops = {}
    for size in (64, 224):
        with torch.device("meta"):
            m = get_model("alexnet", num_classes=10, in_channels=1, input_size=size).eval()
            flops[size] = flops_by_module(m, torch.zeros(1, 1, size, size))[""]
    return flops[224] / flops[64]


def _inception_saving(name: str = "4e") -> float:
    """Multiply-adds of Figure 2a's naive module (the paper's 5x5) against Figure 2b's, for one module
    of Table 1; the grid cancels out."""
    from ..models.googlenet import INCEPTION

    c_in, c1, c3r, c3, c5r, c5, cp = INCEPTION[name]
    naive = c_in * c1 + 9 * c_in * c3 + 25 * c_in * c5
    reduced = c_in * c1 + c_in * c3r + 9 * c3r * c3 + c_in * c5r + 25 * c5r * c5 + c_in * cp
    return naive / reduced


def _probe_params() -> int:
    """The parameters a linear probe trains: MobileNetV2 with a new 10-class head, its features frozen."""
    from ..models import get_model
    from ..transfer import freeze, new_head, trainable

    net = get_model("mobilenet_v2")
    new_head(net, 10)
    freeze(net, "features")
    return trainable(net)


def _vae_effective_beta() -> int:
    """The KL's weight, relative to the ELBO's, when the reconstruction is averaged over the pixels of
    a 3x64x64 image and the KL summed over the latents: the mean divides one term by 3 x 64 x 64."""
    return 3 * 64 * 64


def _yolo_fc1_share() -> float:
    """The share, in %, of the paper's YOLO (20 classes) parameters in its first fully connected layer."""
    from ..models import get_model

    with torch.device("meta"):
        model = get_model("yolov1")
    fc1 = model.classifier[1]
    return 100 * sum(p.numel() for p in fc1.parameters()) / sum(p.numel() for p in model.parameters())


def _meta_count(name: str, part: str | None = None) -> int:
    """Parameters of ``get_model(name)`` (or of its attribute ``part``), counted on the meta device."""
    from ..models import get_model

    with torch.device("meta"):
        model = get_model(name)
    model = getattr(model, part) if part else model
    return sum(p.numel() for p in model.parameters())


def _bert_base_params() -> int:
    """BERT-base as transformers' ``BertModel`` counts it: the encoder and its pooler."""
    from ..models.bert import BertModel

    with torch.device("meta"):
        return sum(p.numel() for p in BertModel().parameters())


def _ring_bytes_resnet50() -> float:
    """Bytes one of 4 processes sends per step to all-reduce ResNet-50's gradients in fp16 (DDP's
    fp16_compress_hook)."""
    from ..distributed import ring_all_reduce_bytes

    return ring_all_reduce_bytes(_meta_count("resnet50"), 4, bytes_per_value=2)


def _fsdp_gib(num_layers: int, hidden_dim: int, num_heads: int, gpus: int) -> float:
    """GiB per GPU of a GPT-2's model states under mixed-precision Adam, fully sharded over ``gpus``:
    16 bytes per parameter (weights, gradients and Adam's two moments)."""
    from ..models import get_model

    with torch.device("meta"):
        model = get_model("gpt2", num_layers=num_layers, num_heads=num_heads, hidden_dim=hidden_dim)
    return 16 * sum(p.numel() for p in model.parameters()) / gpus / 2**30


NUMBERS: dict[str, Number] = {
    "vgg16-rf": Number("the receptive field of a unit of VGG-16's last pool, in pixels", _vgg16_pool5_rf,
                       "Hint: r grows by (k - 1) times the product of the strides before the layer; a 2x2 "
                       "pool with stride 2 adds 1 x that product and doubles it.", unit=" px"),
    "alexnet-flops-ratio": Number("how many times the forward FLOPs of the chapter's AlexNet (1 channel, 10 "
                                  "classes) at 224x224 are its FLOPs at 64x64", _alexnet_flops_ratio,
                                  "Hint: the convolutions' cost grows with the area of their maps, the fully "
                                  "connected layers' does not grow at all.", rel_tol=0.03, unit="x"),
    "googlenet-4e-saving": Number("how many times fewer multiply-adds inception (4e) needs with its 1x1 reductions "
                                  "than Figure 2a's naive module with the same output widths", _inception_saving,
                                  "Hint: per output position, a k x k convolution from a to b channels costs "
                                  "k * k * a * b multiply-adds; the pool costs none.", rel_tol=0.02, unit="x"),
    "resnet18-shortcut-share": Number("the share of ResNet-18's parameters in its projection shortcuts",
                                      lambda: _share("resnet18", lambda n, m: n.endswith("downsample")),
                                      "Hint: three stages change width; each first block has a 1x1 convolution "
                                      "and a batch norm on its shortcut.", rel_tol=0.02, unit=" %"),
    "efficientnet-se-share": Number("the share of EfficientNet-B0's parameters in its squeeze-and-excitation "
                                    "modules", lambda: _share("efficientnet_b0", _is_se),
                                    "Hint: each of the 16 blocks has one, two 1x1 convolutions with biases: "
                                    "expanded -> input/4 -> expanded.", rel_tol=0.02, unit=" %"),
    "transfer-probe-params": Number("the number of parameters a linear probe on MobileNetV2's features trains for "
                                    "10 classes", _probe_params,
                                    "Hint: only the new head trains: a linear layer from the pooled features "
                                    "(their width is the last 1x1 convolution's) to the classes, with biases."),
    "vae-mean-beta": Number("the beta that a reconstruction term averaged over the 3x64x64 values of an image, "
                            "next to a KL summed over the latents, amounts to", _vae_effective_beta,
                            "Hint: multiply the whole loss by what the mean divided the reconstruction by; the "
                            "minimiser does not change, and the KL's factor is then beta."),
    "yolo-fc1-share": Number("the share of the paper's YOLO (448x448, 20 classes) parameters in its first fully "
                             "connected layer", _yolo_fc1_share,
                             "Hint: it maps the flattened 7 x 7 x 1024 features to 4,096 units, with biases; the "
                             "whole network has 271,703,550 parameters.", rel_tol=0.01, unit=" %"),
    "gpt2-params": Number("the number of parameters of GPT-2 small (12 layers, width 768, 1,024 positions, 50,257 "
                          "tokens; the output layer is the token embedding)", lambda: _meta_count("gpt2"),
                          "Hint: per block two layer norms (2 x 2 x 768), attention (768 x 2,304 + 2,304 for Q, K, "
                          "V; 768 x 768 + 768 out), MLP (768 x 3,072 + 3,072 and 3,072 x 768 + 768); then the "
                          "two embeddings and the final layer norm."),
    "ring-allreduce-bytes": Number("the bytes each of 4 GPUs sends per step in a ring all-reduce of ResNet-50's "
                                   "gradients compressed to fp16", _ring_bytes_resnet50,
                                   "Hint: ResNet-50 has 25,557,032 parameters, 2 bytes each in fp16; a ring "
                                   "all-reduce sends 2 (N - 1) / N of the tensor from every process.", rel_tol=0.01,
                                   unit=" bytes"),
    "fsdp-gpt2-large-gib": Number("the GiB of model states (weights, gradients, Adam's moments) per GPU for GPT-2 "
                                  "large (36 layers, width 1,280, 20 heads) in mixed precision, fully sharded over "
                                  "4 GPUs", lambda: _fsdp_gib(36, 1280, 20, 4),
                                  "Hint: count its parameters (about 774 million); mixed-precision Adam keeps 16 "
                                  "bytes per parameter; full sharding divides them by the number of GPUs. 1 GiB is "
                                  "2**30 bytes.", rel_tol=0.02, unit=" GiB"),
    "fsdp-gpt2-xl-gib": Number("the GiB of model states (weights, gradients, Adam's moments) per GPU for GPT-2 XL "
                               "(48 layers, width 1,600, 25 heads) in mixed precision, fully sharded over 8 GPUs",
                               lambda: _fsdp_gib(48, 1600, 25, 8),
                               "Hint: count its parameters (about 1.56 billion); mixed-precision Adam keeps 16 "
                               "bytes per parameter; full sharding divides them by the number of GPUs. 1 GiB is "
                               "2**30 bytes.", rel_tol=0.02, unit=" GiB"),
    "bert-base-params": Number("the number of parameters of BERT-base with its pooler (30,522 tokens, 512 "
                               "positions, 2 segments, 12 layers of width 768, MLP 3,072)", _bert_base_params,
                               "Hint: the three embeddings and their layer norm; per layer Q, K, V and the output "
                               "projection (4 x (768 x 768 + 768)), two layer norms, the MLP; then the pooler, a "
                               "768 x 768 layer with biases."),
}


def check_number(label: str, answer: float, *, reveal: bool = False) -> bool:
    """Compare ``answer`` with the package's figure for exercise ``label`` (see ``NUMBERS``)."""
    if label not in NUMBERS:
        raise ValueError(f"no numeric exercise {label!r}; they are {', '.join(NUMBERS)}")
    n = NUMBERS[label]
    real = float(n.compute())
    ok = math.isclose(answer, real, rel_tol=n.rel_tol, abs_tol=0.5 if n.rel_tol == 0 else 0.0)
    shown = f"{real:,.0f}{n.unit}" if n.rel_tol == 0 else f"{real:,.3g}{n.unit}"
    tol = f" (within {100 * n.rel_tol:g} %)" if n.rel_tol else ""
    if not ok and not reveal:
        side = "too high" if answer > real else "too low"
        return _report(False, n.what + tol, f"{answer:,}{n.unit}", shown, f"It is {side}. {n.hint}", False)
    return _report(ok, n.what, f"{answer:,}{n.unit}", shown, n.hint, reveal)
