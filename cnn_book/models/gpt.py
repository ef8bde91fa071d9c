"""GPT-2 (Radford et al., 2019): a stack of causal pre-norm Transformer blocks that predicts the next token.

Tokens and positions are embedded (both learned) and added; ``num_layers`` of the previous chapter's
``EncoderBlock`` (pre-norm, as GPT-2's section 2.3 moved the layer norm to each block's input)
run with a causal mask, so that position t sees tokens 0 .. t only; a final layer norm; and the
output layer is the token embedding itself, transposed (weight tying), which gives a score for
every token of the vocabulary at every position: (N, T) token ids -> (N, T, vocab) logits.

Initialisation as GPT-2's: weights N(0, 0.02), biases 0, and the two projections that write into
the residual stream (the attention's output, the MLP's second layer) scaled by 1 / sqrt(2 L),
L blocks with two residual branches each, so that the stream's variance does not grow with depth.

``from_transformers(state_dict)`` turns the state dict of ``transformers``' ``GPT2LMHeadModel``
into this model's: its ``Conv1D`` layers store weights as (in, out), the transpose of
``nn.Linear``'s, and ``GPT2_NAMES`` maps its names to the blocks' (``attn.c_attn`` -> our
``self_attention.in_proj_weight``, ...). The result loads strictly and gives the same logits (tested).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ._api import register_model
from .transformer import EncoderBlock, KVCache, attention_maps, check_token_ids


class GPT(nn.Module):
    """``transformer.wte`` (token embeddings), ``transformer.wpe`` (positions), ``transformer.h``
    (the blocks), ``transformer.ln_f``, ``lm_head`` (tied to ``wte``). ``forward(idx)``: (N, T)
    token ids -> (N, T, vocab_size) logits of the next token at every position."""

    input_dtype = torch.long  # token ids, not pixels

    def __init__(self, vocab_size: int = 50257, block_size: int = 1024, num_layers: int = 12, num_heads: int = 12,
                 hidden_dim: int = 768, dropout: float = 0.0, activation: str = "gelu_tanh",
                 name: str = "GPT") -> None:
        super().__init__()
        self.name, self.vocab_size, self.block_size = name, vocab_size, block_size
        self.input_shape = (block_size,)
        self.transformer = nn.ModuleDict(dict(
            wte=nn.Embedding(vocab_size, hidden_dim),
            wpe=nn.Embedding(block_size, hidden_dim),
            drop=nn.Dropout(dropout),
            h=nn.ModuleList(EncoderBlock(num_heads, hidden_dim, 4 * hidden_dim, dropout, dropout, norm_first=True,
                                         activation=activation, eps=1e-5) for _ in range(num_layers)),
            ln_f=nn.LayerNorm(hidden_dim, eps=1e-5),
        ))
        self.lm_head = nn.Linear(hidden_dim, vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # tied: one matrix reads tokens in and writes them out
        for name_, p in self.named_parameters():
            if name_.endswith("bias"):
                nn.init.zeros_(p)
            elif p.dim() == 2:  # linear and embedding weights, in_proj_weight included
                std = 0.02 / math.sqrt(2 * num_layers) if name_.endswith(("out_proj.weight", "mlp.3.weight")) else 0.02
                nn.init.normal_(p, std=std)

    def forward(self, idx: Tensor, kv_cache: KVCache | None = None) -> Tensor:
        """(N, T) token ids -> (N, T, vocab) logits. With ``kv_cache`` (``generate``), ``idx`` holds
        only the tokens after those the cache holds, at the positions that follow them."""
        if idx.dim() != 2 or idx.is_floating_point():
            raise ValueError(f"{self.name} takes token ids of shape (N, T), integers; got {tuple(idx.shape)} "
                             f"{str(idx.dtype).removeprefix('torch.')}")
        check_token_ids(idx, self.vocab_size, self.name)
        start = kv_cache.length if kv_cache is not None else 0  # the tokens the cache already holds
        t = start + idx.shape[1]
        if t > self.block_size:
            raise ValueError(f"{self.name} has positions for {self.block_size} tokens (its block_size); got {t}: "
                             f"keep the last {self.block_size} (idx[:, -{self.block_size}:])")
        pos = torch.arange(start, t, device=idx.device)[None]  # (1, T): the same positions for every sequence
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (N, T, D)
        for i, block in enumerate(self.transformer.h):  # position t attends to 0 .. t
            x = block(x, is_causal=True, kv_cache=kv_cache.layers[i] if kv_cache is not None else None)
        return self.lm_head(self.transformer.ln_f(x))  # (N, T, vocab)

    @torch.no_grad()
    def attention_maps(self, idx: Tensor) -> list[Tensor]:
        """Every block's attention weights for ``idx``, each (N, heads, T, T), in eval mode; row t is
        where position t looks (zero right of the diagonal: the future is masked)."""
        return attention_maps(self, [block.self_attention for block in self.transformer.h], idx)

    @torch.no_grad()
    def generate(self, idx: Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
                 generator: torch.Generator | None = None, use_cache: bool = True) -> Tensor:
        """Append ``max_new_tokens`` tokens to ``idx`` (N, T), one at a time: the logits of the last
        position, divided by ``temperature``, cut to the ``top_k`` largest (if given), softmax, one
        token drawn (``sample_next``). The model runs in eval mode.

        ``use_cache``: keep every layer's keys and values (``KVCache``), so that each new token costs
        one position's work instead of the whole window's. The tokens are the same either way
        (tested). With learned absolute positions the cache serves only while the text fits the
        ``block_size`` window: once it slides, every token's position changes, and each step
        recomputes the window, as without the cache."""
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be a whole number of at least 0, got {max_new_tokens!r}")
        if idx.dim() != 2 or idx.shape[1] == 0:
            raise ValueError(f"generate continues a prompt of shape (N, T) with T >= 1 token; got {tuple(idx.shape)}: "
                             "start from at least one token (a newline, say)")
        _check_sampling(temperature, top_k)
        was_training = self.training
        self.eval()
        try:
            cache = KVCache(len(self.transformer.h)) if use_cache else None
            for _ in range(max_new_tokens):
                if cache is not None and 0 < cache.length and idx.shape[1] <= self.block_size:
                    logits = self(idx[:, -1:], kv_cache=cache)[:, -1]  # only the newest token runs
                else:  # no cache, the first step, or a window that slid: the whole window runs
                    if cache is not None:
                        cache.clear()
                    logits = self(idx[:, -self.block_size:], kv_cache=cache)[:, -1]  # (N, vocab)
                idx = torch.cat([idx, sample_next(logits, temperature, top_k, generator)], dim=1)
        finally:
            self.train(was_training)
        return idx


def sample_next(logits: Tensor, temperature: float = 1.0, top_k: int | None = None,
                generator: torch.Generator | None = None) -> Tensor:
    """One token per row of ``logits`` (N, vocab) -> (N, 1). ``temperature`` < 1 sharpens the
    distribution, > 1 flattens it; 0 takes the most likely token (greedy). ``top_k`` keeps the k
    most likely tokens and renormalises over them."""
    _check_sampling(temperature, top_k)
    if temperature == 0:
        return logits.argmax(-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # the k-th largest score
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)


def _check_sampling(temperature: float, top_k: int | None) -> None:
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature >= 0):
        raise ValueError(f"temperature must be 0 (greedy) or a positive, finite number, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None (every token) or a whole number of at least 1, got {top_k!r}")


# transformers' GPT2LMHeadModel names -> ours (the blocks are the previous chapter's EncoderBlock)
GPT2_NAMES = {"attn.c_attn.weight": "self_attention.in_proj_weight", "attn.c_attn.bias": "self_attention.in_proj_bias",
              "attn.c_proj.": "self_attention.out_proj.", "mlp.c_fc.": "mlp.0.", "mlp.c_proj.": "mlp.3."}
# Conv1D layers: weight stored (in, out), the transpose of nn.Linear's (out, in)
GPT2_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def from_transformers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A ``GPT2LMHeadModel`` state dict as this model's: Conv1D weights transposed, names mapped
    (``GPT2_NAMES``); buffers some versions keep (``attn.bias``, ``attn.masked_bias``: the causal
    mask as a tensor) are dropped."""
    out = {}
    for name, t in state_dict.items():
        if name.endswith((".attn.bias", ".attn.masked_bias")):
            continue
        if name.endswith(GPT2_CONV1D):
            t = t.t()
        for old, new in GPT2_NAMES.items():
            if old in name:
                name = name.replace(old, new)
                break
        out[name] = t.contiguous()
    return out


@register_model
def gpt2(vocab_size: int = 50257, block_size: int = 1024, num_layers: int = 12, num_heads: int = 12,
         hidden_dim: int = 768, dropout: float = 0.0, **kwargs) -> GPT:
    """GPT-2 small by default (12 layers, 12 heads, width 768, 1024 positions, 50,257 tokens:
    124,439,808 parameters, the output layer being the token embedding). Any size: the book's
    character model is ``gpt2(vocab_size=..., block_size=64, num_layers=4, num_heads=4, hidden_dim=128)``."""
    name = "GPT-2" if (num_layers, hidden_dim, vocab_size) == (12, 768, 50257) else \
        f"GPT-{num_layers}x{hidden_dim}"
    return GPT(vocab_size, block_size, num_layers, num_heads, hidden_dim, dropout, name=name, **kwargs)
