"""Checkers for the chapters' exercises: the reader answers, the package computes, the checker compares.

- ``check_output_size(layer, input_shape, answer)`` and ``check_param_count(module, answer)`` run the
  real layer;
- ``check_number(label, answer)`` compares a number (a receptive field, a cost ratio, a share of the
  parameters) with what the package computes for that exercise, within a tolerance;
- ``check_function(label, fn)`` runs a function the reader wrote on hidden cases against the
  package's own.

Every checker prints its verdict and returns it (True or False). After a wrong answer it prints a
hint, never the answer; call it again with ``reveal=True`` to see the answer.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .inspect import count_parameters

_REVEAL = "To see the answer, call the checker again with reveal=True."


def conv_output_size(n: int, kernel_size: int, stride: int = 1, padding: int = 0, dilation: int = 1) -> int:
    """floor((n + 2p - d(k - 1) - 1) / s) + 1: the output side of a convolution or pooling layer."""
    return (n + 2 * padding - dilation * (kernel_size - 1) - 1) // stride + 1


def _report(ok: bool, what: str, yours, real, hint: str, reveal: bool) -> bool:
    if ok:
        print(f"Correct: {what} is {real}.")
    elif reveal:
        print(f"Not quite: you said {yours}; {what} is {real}. {hint}")
    else:
        print(f"Not quite: {yours} is not {what}. {hint} {_REVEAL}")
    return ok


@torch.no_grad()
def check_output_size(layer: nn.Module, input_shape: tuple[int, ...], answer: tuple[int, ...], *,
                      reveal: bool = False) -> bool:
    """Run ``layer`` on a zero input of ``input_shape`` (C, H, W) and compare its output shape with
    ``answer`` (C, H, W)."""
    real = tuple(layer(torch.zeros(1, *input_shape)).shape[1:])
    name = repr(layer) if "\n" not in repr(layer) else type(layer).__name__
    return _report(tuple(answer) == real, f"the output shape of {name} on {tuple(input_shape)}", tuple(answer),
                   real, "Hint: each side is floor((n + 2p - d(k - 1) - 1) / s) + 1.", reveal)


def check_param_count(module: nn.Module, answer: int, *, reveal: bool = False) -> bool:
    """Compare ``answer`` with the number of parameters of ``module``."""
    real = count_parameters(module)
    hint = "Hint: a convolution has out * (in/groups * k * k + 1); a linear layer out * (in + 1)"
    if not any(isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None for m in module.modules()):
        hint += " (without the + 1 where a layer has no bias)"
    if any(isinstance(m, nn.BatchNorm2d) for m in module.modules()):
        hint += "; a batch norm has 2 per channel"
    return _report(answer == real, f"the parameter count of {type(module).__name__}", answer, f"{real:,}",
                   hint + ".", reveal)


# ----------------------------------------------------------------------------------------------------
# Numbers: what the package computes for an exercise, and how close an answer must be.


@dataclass(frozen=True)
class Number:
    what: str
    compute: Callable[[], float]
    hint: str
    rel_tol: float = 0.0  # 0: the answer must be exact (after rounding to the unit)
    unit: str = ""


def _vgg16_pool5_rf() -> float:
    from .inspect import receptive_fields
    from .models import get_model

    with torch.device("meta"):
        vgg = get_model("vgg16")
    return receptive_fields(vgg.features, torch.zeros(1, 3, 224, 224, device="meta"))["30"]


def _share(model_name: str, select: Callable[[str, nn.Module], bool]) -> float:
    """Percent of ``model_name``'s parameters in the submodules ``select(name, module)`` picks."""
    from .models import get_model

    with torch.device("meta"):
        m = get_model(model_name)
    inside = sum(count_parameters(sub) for name, sub in m.named_modules() if select(name, sub))
    return 100 * inside / count_parameters(m)


def _is_se(name: str, module: nn.Module) -> bool:
    from .models.blocks import SqueezeExcitation

    return isinstance(module, SqueezeExcitation)


def _alexnet_flops_ratio() -> float:
    """Forward FLOPs of the chapter's AlexNet (1 channel, 10 classes) at 224x224 against 64x64."""
    from .inspect import flops_by_module
    from .models import get_model

    flops = {}
    for size in (64, 224):
        with torch.device("meta"):
            m = get_model("alexnet", num_classes=10, in_channels=1, input_size=size).eval()
            flops[size] = flops_by_module(m, torch.zeros(1, 1, size, size))[""]
    return flops[224] / flops[64]


def _inception_saving(name: str = "4e") -> float:
    """Multiply-adds of Figure 2a's naive module (the paper's 5x5) against Figure 2b's, for one module
    of Table 1; the grid cancels out."""
    from .models.googlenet import INCEPTION

    c_in, c1, c3r, c3, c5r, c5, cp = INCEPTION[name]
    naive = c_in * c1 + 9 * c_in * c3 + 25 * c_in * c5
    reduced = c_in * c1 + c_in * c3r + 9 * c3r * c3 + c_in * c5r + 25 * c5r * c5 + c_in * cp
    return naive / reduced


def _probe_params() -> int:
    """The parameters a linear probe trains: MobileNetV2 with a new 10-class head, its features frozen."""
    from .models import get_model
    from .transfer import freeze, new_head, trainable

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
    from .models import get_model

    with torch.device("meta"):
        model = get_model("yolov1")
    fc1 = model.classifier[1]
    return 100 * sum(p.numel() for p in fc1.parameters()) / sum(p.numel() for p in model.parameters())


def _meta_count(name: str, part: str | None = None) -> int:
    """Parameters of ``get_model(name)`` (or of its attribute ``part``), counted on the meta device."""
    from .models import get_model

    with torch.device("meta"):
        model = get_model(name)
    model = getattr(model, part) if part else model
    return sum(p.numel() for p in model.parameters())


def _bert_base_params() -> int:
    """BERT-base as transformers' ``BertModel`` counts it: the encoder and its pooler."""
    from .models.bert import BertModel

    with torch.device("meta"):
        return sum(p.numel() for p in BertModel().parameters())


def _ring_bytes_resnet50() -> float:
    """Bytes one of 4 processes sends per step to all-reduce ResNet-50's gradients in fp16 (DDP's
    fp16_compress_hook)."""
    from .distributed import ring_all_reduce_bytes

    return ring_all_reduce_bytes(_meta_count("resnet50"), 4, bytes_per_value=2)


def _fsdp_gib(num_layers: int, hidden_dim: int, num_heads: int, gpus: int) -> float:
    """GiB per GPU of a GPT-2's model states under mixed-precision Adam, fully sharded over ``gpus``:
    16 bytes per parameter (weights, gradients and Adam's two moments)."""
    from .models import get_model

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
    "vae-mean-beta": Number("the beta that a reconstruction term averaged over the pixels of a 3x64x64 image, "
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


# ----------------------------------------------------------------------------------------------------
# Functions: the reader writes one, the checker runs it on hidden cases against the package's own.


def _receptive_field(layers: list[tuple[int, int]]) -> int:
    r, j = 1, 1
    for k, s in layers:
        r, j = r + (k - 1) * j, j * s
    return r


def _separable_mult_adds(h: int, w: int, c_in: int, c_out: int, k: int) -> int:
    return h * w * c_in * k * k + h * w * c_in * c_out


def _iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    from .tasks import SegmentationScores, confusion_matrix

    return SegmentationScores([], confusion_matrix(pred, target, num_classes), 0.0).iou  # nan: in neither


def _dice(pred: torch.Tensor, target: torch.Tensor, c: int) -> float:
    p, g = pred == c, target == c
    return 2 * (p & g).sum().item() / (p.sum() + g.sum()).item()


def _grey_first_layer(weight: torch.Tensor, bias: torch.Tensor, mean, std) -> tuple[torch.Tensor, torch.Tensor]:
    """A one-channel layer equal, on a grey image g, to the RGB layer on (g, g, g) normalised
    per channel: sum_c W_c (g - m_c) / s_c + b = (sum_c W_c / s_c) g + (b - sum_c m_c / s_c sum W_c)."""
    m = torch.as_tensor(mean, dtype=weight.dtype).view(1, 3, 1, 1)
    s = torch.as_tensor(std, dtype=weight.dtype).view(1, 3, 1, 1)
    return (weight / s).sum(1, keepdim=True), bias - (weight * m / s).sum(dim=(1, 2, 3))


def _same_padding(k: int, d: int = 1) -> int:
    return d * (k - 1) // 2


def _cases_padding(rng: random.Random):
    for _ in range(20):
        yield (rng.choice([1, 3, 5, 7, 9, 11]), rng.choice([1, 2, 3, 4]))


def _cases_conv(rng: random.Random):
    for _ in range(40):
        k, s, p, d = rng.choice([1, 2, 3, 5, 7, 11]), rng.choice([1, 2, 4]), rng.randint(0, 3), rng.choice([1, 1, 2])
        n = rng.randint(d * (k - 1) + 1, 300)
        yield (n, k, s, p, d)


def _cases_rf(rng: random.Random):
    for _ in range(30):
        yield ([(rng.choice([1, 2, 3, 5, 7]), rng.choice([1, 1, 2])) for _ in range(rng.randint(1, 8))],)


def _cases_separable(rng: random.Random):
    for _ in range(30):
        yield (rng.choice([7, 14, 28, 56, 112]),) * 2 + (rng.choice([16, 32, 64, 512]), rng.choice([16, 64, 1024]),
                                                         rng.choice([3, 5]))


def _cases_masks(rng: random.Random):
    g = torch.Generator().manual_seed(rng.randint(0, 2**31))
    for _ in range(20):
        k = rng.randint(2, 5)
        target = torch.randint(0, k, (rng.randint(1, 3), 8, 8), generator=g)
        pred = torch.where(torch.rand(target.shape, generator=g) < 0.7, target,
                           torch.randint(0, k, target.shape, generator=g))
        yield (pred, target, k)


def _cases_grey(rng: random.Random):
    for _ in range(6):
        g = torch.Generator().manual_seed(rng.randrange(10**6))
        out, k = rng.choice([1, 4, 8]), rng.choice([1, 3, 5])
        weight = torch.randn(out, 3, k, k, generator=g, dtype=torch.float64)
        bias = torch.randn(out, generator=g, dtype=torch.float64)
        mean = tuple(round(rng.uniform(0.2, 0.6), 3) for _ in range(3))
        std = tuple(round(rng.uniform(0.1, 0.4), 3) for _ in range(3))
        yield weight, bias, mean, std


def _cases_dice(rng: random.Random):
    for pred, target, k in _cases_masks(rng):
        yield (pred, target, rng.randrange(k))


def _box_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    from torchvision.ops import box_iou

    return float(box_iou(a[None], b[None])[0, 0])


def _cases_boxes(rng: random.Random):
    for _ in range(30):
        pair = []
        for _ in range(2):
            x, y = rng.uniform(0, 80), rng.uniform(0, 80)
            pair.append(torch.tensor([x, y, x + rng.uniform(1, 40), y + rng.uniform(1, 40)], dtype=torch.float64))
        yield tuple(pair)
    yield (torch.tensor([0.0, 0, 10, 10], dtype=torch.float64), torch.tensor([10.0, 0, 20, 10], dtype=torch.float64))
    yield (torch.tensor([0.0, 0, 10, 10], dtype=torch.float64), torch.tensor([2.0, 2, 6, 6], dtype=torch.float64))


def _nms(boxes: torch.Tensor, scores: torch.Tensor, iou: float) -> torch.Tensor:
    from torchvision.ops import nms

    return nms(boxes, scores, iou)


def _cases_nms(rng: random.Random):
    g = torch.Generator().manual_seed(rng.randrange(10**6))
    for _ in range(12):
        k = rng.randint(1, 12)
        centres = torch.rand(rng.randint(1, 3), 2, generator=g, dtype=torch.float64) * 60
        xy = centres[torch.randint(0, len(centres), (k,), generator=g)] + torch.randn(k, 2, generator=g,
                                                                                       dtype=torch.float64) * 4
        wh = torch.rand(k, 2, generator=g, dtype=torch.float64) * 20 + 10
        scores = torch.randperm(k, generator=g).to(torch.float64) / k + 0.01  # all different
        yield torch.cat([xy, xy + wh], 1), scores, rng.choice([0.3, 0.5, 0.7])


def _gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    from .models.vae import gaussian_kl

    return gaussian_kl(mu, logvar)


def _reparameterised(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    return mu + torch.exp(0.5 * logvar) * eps


def _cases_gaussian(rng: random.Random, with_eps: bool = False):
    g = torch.Generator().manual_seed(rng.randrange(10**6))
    for _ in range(12):
        n, d = rng.randint(1, 6), rng.choice([1, 2, 16, 20])
        mu = torch.randn(n, d, generator=g, dtype=torch.float64) * rng.choice([0.1, 1.0, 3.0])
        logvar = torch.randn(n, d, generator=g, dtype=torch.float64) * rng.choice([0.1, 1.0, 2.0])
        yield (mu, logvar, torch.randn(n, d, generator=g, dtype=torch.float64)) if with_eps else (mu, logvar)


def _attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    from .models.transformer import scaled_dot_product_attention

    return scaled_dot_product_attention(q, k, v, mask)[0]


def _cases_attention(rng: random.Random):
    g = torch.Generator().manual_seed(rng.randrange(10**6))
    for i in range(12):
        n, length, keys, d, dv = rng.randint(1, 3), rng.randint(1, 5), rng.randint(1, 6), rng.choice([2, 4, 8]), 3
        q, k = (torch.randn(n, t, d, generator=g, dtype=torch.float64) for t in (length, keys))
        v = torch.randn(n, keys, dv, generator=g, dtype=torch.float64)
        mask = None
        if i % 3:  # True: the query may look at the key; every query sees at least one key
            mask = torch.rand(length, keys, generator=g) < 0.6
            mask[:, rng.randrange(keys)] = True
        yield q, k, v, mask


def _padding_to_sdpa(key_padding_mask: torch.Tensor) -> torch.Tensor:
    return ~key_padding_mask[:, None, None, :]


def _cases_padding_masks(rng: random.Random):
    for _ in range(10):
        n, s = rng.randint(1, 4), rng.randint(1, 8)
        lengths = [rng.randint(1, s) for _ in range(n)]
        yield (torch.tensor([[j >= t for j in range(s)] for t in lengths], dtype=torch.bool),)


def _causal(t: int) -> torch.Tensor:
    from .models.transformer import causal_mask

    return causal_mask(t)


def _cases_causal(rng: random.Random):
    return [(t,) for t in (1, 2, 3, 5, 8, rng.randint(9, 20))]


def _next_token_probs(logits: torch.Tensor, temperature: float, k: int) -> torch.Tensor:
    scaled = logits / temperature
    kth = scaled.topk(min(k, scaled.shape[-1]), dim=-1).values[..., -1:]
    return scaled.masked_fill(scaled < kth, float("-inf")).softmax(-1)


def _cases_sampling(rng: random.Random):
    g = torch.Generator().manual_seed(rng.randrange(10**6))
    for _ in range(10):
        n, v = rng.randint(1, 3), rng.randint(2, 12)
        yield (torch.randn(n, v, generator=g, dtype=torch.float64) * 3, rng.choice([0.5, 1.0, 2.0]),
               rng.randint(1, v))


def _mlm_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)


def _cases_mlm(rng: random.Random):
    g = torch.Generator().manual_seed(rng.randrange(10**6))
    for _ in range(10):
        n, t, v = rng.randint(1, 3), rng.randint(3, 10), rng.randint(3, 20)
        targets = torch.randint(0, v, (n, t), generator=g)
        ignored = torch.rand(n, t, generator=g) > 0.3
        ignored.view(-1)[rng.randrange(n * t)] = False  # at least one masked position
        yield torch.randn(n, t, v, generator=g, dtype=torch.float64), targets.masked_fill(ignored, -100)


def _scaled_lr(base_lr: float, base_batch: int, batch: int, step: int, warmup_steps: int) -> float:
    """Goyal et al.'s rule: the rate grows with the batch (k = batch / base_batch), reached by a
    linear warm-up from ``base_lr`` over ``warmup_steps`` steps."""
    target = base_lr * batch / base_batch
    if step >= warmup_steps:
        return target
    return base_lr + (target - base_lr) * step / warmup_steps


def _cases_scaled_lr(rng: random.Random):
    for _ in range(12):
        base_batch = rng.choice([32, 64, 256])
        warmup = rng.choice([1, 100, 500, 2_500])
        yield (rng.choice([0.1, 0.05, 3e-4]), base_batch, base_batch * rng.choice([1, 2, 8, 32]),
               rng.randint(0, 2 * warmup), warmup)


@dataclass(frozen=True)
class Function:
    what: str
    reference: Callable
    cases: Callable[[random.Random], object]
    hint: str


FUNCTIONS: dict[str, Function] = {
    "conv-output-size": Function("output_size(n, k, s, p, d): the side of a convolution's output",
                                 conv_output_size, _cases_conv,
                                 "Hint: the dilated kernel spans d(k - 1) + 1 pixels; count how many strides fit."),
    "same-padding": Function("same_padding(k, d): the padding that keeps the grid of a stride-1 convolution "
                             "with an odd kernel k and dilation d", _same_padding, _cases_padding,
                             "Hint: the output side is n + 2p - d(k - 1); set it equal to n."),
    "receptive-field": Function("receptive_field(layers): the receptive field of a stack of (k, s) layers",
                                _receptive_field, _cases_rf,
                                "Hint: keep two numbers, r and the jump j (the product of the strides so far)."),
    "separable-cost": Function("separable_mult_adds(h, w, c_in, c_out, k): a depthwise-separable layer's "
                               "mult-adds (stride 1)", _separable_mult_adds, _cases_separable,
                               "Hint: the depthwise part has one k x k filter per input channel; the pointwise "
                               "part is a 1x1 convolution."),
    "iou": Function("iou(pred, target, num_classes): the IoU of every class", _iou, _cases_masks,
                    "Hint: IoU_c = TP / (TP + FP + FN), counted over all pixels of the batch."),
    "grey-first-layer": Function("grey_first_layer(weight, bias, mean, std): a one-channel first layer equal to an "
                                 "RGB one on a grey image repeated and normalised", _grey_first_layer, _cases_grey,
                                 "Hint: write the RGB layer's output on (g - m_c) / s_c for c = 0, 1, 2 and "
                                 "collect the terms in g and the constant ones; return (weight, bias)."),
    "dice": Function("dice(pred, target, c): the Dice coefficient of class c", _dice, _cases_dice,
                     "Hint: Dice = 2 |P and G| / (|P| + |G|), with P and G the pixels of class c."),
    "vae-kl": Function("kl(mu, logvar): KL(N(mu, sigma^2) || N(0, I)) of each row, summed over the latents",
                       _gaussian_kl, _cases_gaussian,
                       "Hint: per latent, (mu^2 + sigma^2 - 1 - log sigma^2) / 2, with sigma^2 = exp(logvar); "
                       "sum over dimension 1."),
    "vae-reparameterise": Function("reparameterise(mu, logvar, eps): the code z for the noise eps",
                                   _reparameterised, lambda rng: _cases_gaussian(rng, with_eps=True),
                                   "Hint: the network predicts log sigma^2, so sigma = exp(logvar / 2), not "
                                   "exp(logvar)."),
    "box-iou": Function("iou(a, b): the IoU of two boxes (x1, y1, x2, y2)", _box_iou, _cases_boxes,
                        "Hint: the intersection is max(0, min(a.x2, b.x2) - max(a.x1, b.x1)) times the same in y; "
                        "the union is the two areas minus the intersection."),
    "nms": Function("nms(boxes, scores, iou): the indices non-maximum suppression keeps, best score first", _nms,
                    _cases_nms,
                    "Hint: take the best remaining box, keep it, drop every remaining box that overlaps it by an "
                    "IoU above the threshold (strictly), and repeat; return a tensor of int64 indices."),
    "attention": Function("attention(q, k, v, mask): softmax(q k^T / sqrt(d)) v, where a boolean mask (or None) "
                          "marks with True the keys a query may look at", _attention, _cases_attention,
                          "Hint: scale by the square root of the queries' last dimension; set the scores the "
                          "mask forbids to -inf before the softmax over the last dimension (the keys)."),
    "padding-mask": Function("to_sdpa(key_padding_mask): nn.MultiheadAttention's (N, S) padding mask as a "
                             "boolean attn_mask for F.scaled_dot_product_attention, shaped (N, 1, 1, S)",
                             _padding_to_sdpa, _cases_padding_masks,
                             "Hint: the two conventions are opposite (True ignored, True takes part), and the "
                             "mask must broadcast over the heads and the queries."),
    "causal-mask": Function("causal_mask(t): the (t, t) boolean mask, True where position i may look at position "
                            "j (F.scaled_dot_product_attention's convention)", _causal, _cases_causal,
                            "Hint: position i sees itself and every earlier position: the lower triangle, "
                            "diagonal included (torch.tril)."),
    "next-token-probs": Function("next_token_probs(logits, temperature, k): the distribution sampling draws the "
                                 "next token from, after the temperature and top-k", _next_token_probs,
                                 _cases_sampling,
                                 "Hint: divide by the temperature first; keep the k largest scores of each row "
                                 "(ties with the k-th included), set the others to -inf, then softmax."),
    "scaled-lr": Function("scaled_lr(base_lr, base_batch, batch, step, warmup_steps): the learning rate at "
                          "step for a batch of batch items, by the linear scaling rule with a linear warm-up "
                          "from base_lr", _scaled_lr, _cases_scaled_lr,
                          "Hint: the target is base_lr * batch / base_batch; before warmup_steps move from "
                          "base_lr to it in equal steps (step 0 gives base_lr), after it stay there."),
    "mlm-loss": Function("mlm_loss(logits, targets): the mean cross-entropy over the masked positions only "
                         "(targets -100 elsewhere)", _mlm_loss, _cases_mlm,
                         "Hint: average over the positions whose target is not -100, not over all N x T; "
                         "F.cross_entropy takes (N*T, V) scores and has an ignore_index."),
}


def _same(a, b) -> bool:
    if isinstance(b, tuple):  # a function that returns several values
        return isinstance(a, (tuple, list)) and len(a) == len(b) and all(map(_same, a, b))
    if isinstance(b, torch.Tensor) and b.dtype == torch.bool:  # a mask: every entry must match
        a = torch.as_tensor(a)
        return a.shape == b.shape and a.dtype == torch.bool and torch.equal(a, b)
    if isinstance(b, torch.Tensor):
        a = torch.as_tensor(a, dtype=b.dtype)
        return a.shape == b.shape and torch.allclose(a, b, rtol=1e-6, atol=1e-9, equal_nan=True)
    return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)  # float32 answers pass


def check_function(label: str, fn: Callable, *, reveal: bool = False, seed: int | None = None) -> bool:
    """Run the reader's ``fn`` on hidden cases of exercise ``label`` (see ``FUNCTIONS``) and compare
    it with the package's own. After a failure, says on which input and that the value differs."""
    if label not in FUNCTIONS:
        raise ValueError(f"no function exercise {label!r}; they are {', '.join(FUNCTIONS)}")
    ex = FUNCTIONS[label]
    cases = list(ex.cases(random.Random(seed if seed is not None else 20_26)))
    for args in cases:
        try:
            got = fn(*args)
        except Exception as e:  # the reader's function failed: say on what, and with which error
            print(f"Not quite: your function raised {type(e).__name__}: {e} on {_show_args(args)}. {ex.hint}")
            return False
        want = ex.reference(*args)
        if not _same(got, want):
            if reveal:
                print(f"Not quite: on {_show_args(args)} your function gives {got}; the answer is {want}.")
            else:
                print(f"Not quite: on {_show_args(args)} your function gives {_short(got)}, which is not right. "
                      f"{ex.hint} {_REVEAL}")
            return False
    print(f"Correct: {ex.what} agrees with the package's on {len(cases)} hidden cases.")
    return True


def _short(v) -> str:
    if isinstance(v, (tuple, list)) and any(isinstance(x, torch.Tensor) for x in v):
        return "(" + ", ".join(map(_short, v)) + ")"
    if isinstance(v, torch.Tensor):
        return f"a tensor of shape {tuple(v.shape)}" if v.numel() > 8 else str(v.tolist())
    return repr(v)


def _show_args(args) -> str:
    return "(" + ", ".join(f"a {tuple(a.shape)} tensor" if isinstance(a, torch.Tensor) else repr(a)
                           for a in args) + ")"
