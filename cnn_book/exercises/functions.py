"""Functions: the reader writes one, the checker runs it on hidden cases against the package's own."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ._report import _after_hint, _reveals, conv_output_size


def _receptive_field(layers: list[tuple[int, int]]) -> int:
    r, j = 1, 1
    for k, s in layers:
        r, j = r + (k - 1) * j, j * s
    return r


def _separable_mult_adds(h: int, w: int, c_in: int, c_out: int, k: int) -> int:
    return h * w * c_in * k * k + h * w * c_in * c_out


def _iou(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    from ..scores import SegmentationScores, confusion_matrix

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
    from ..models.vae import gaussian_kl

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
    from ..models.transformer import scaled_dot_product_attention

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
    from ..models.transformer import causal_mask

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
            if _reveals(reveal):
                print(f"Not quite: on {_show_args(args)} your function gives {got}; the answer is {want}.")
            else:
                print(f"Not quite: on {_show_args(args)} your function gives {_short(got)}, which is not right. "
                      f"{ex.hint} {_after_hint(reveal)}".rstrip())
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
