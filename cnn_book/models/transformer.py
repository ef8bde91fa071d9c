"""Attention and the Transformer's blocks, from scratch (Vaswani et al., 2017, arXiv 1706.03762).

Everything here is written out so that a reader can follow it, and each piece is proven equal to
PyTorch's own in the tests: ``scaled_dot_product_attention`` to ``F.scaled_dot_product_attention``,
``MultiheadAttention`` to ``nn.MultiheadAttention`` (same parameter names, so the same state dict),
``EncoderBlock`` to ``nn.TransformerEncoderLayer`` (pre-norm and post-norm; ``from_torch_layer``
maps its names). The Vision Transformer (``models.vit``) and the GPT/BERT chapter build on these.

Two mask conventions meet here, and they are opposite:

- ``F.scaled_dot_product_attention`` and this module's ``scaled_dot_product_attention`` take a
  boolean ``attn_mask`` whose True marks what *takes part* (a query may attend to that key);
- ``nn.MultiheadAttention`` (and this module's ``MultiheadAttention``) take a boolean
  ``attn_mask`` and a ``key_padding_mask`` whose True marks what is *ignored*.

A float mask is added to the scores in both (``-inf`` removes a key).
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ._api import register_model


def scaled_dot_product_attention(query: Tensor, key: Tensor, value: Tensor, attn_mask: Tensor | None = None,
                                 dropout_p: float = 0.0, is_causal: bool = False) -> tuple[Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d_k) + mask) V, with the weights: (output (..., L, E_v), weights (..., L, S)).

    ``query`` (..., L, E), ``key`` (..., S, E), ``value`` (..., S, E_v). A boolean ``attn_mask``
    (broadcast to (..., L, S)) is True where a query may attend to a key (F.scaled_dot_product_
    attention's convention); a float one is added to the scores. ``is_causal``: query i sees keys
    0 .. i only. ``dropout_p`` drops weights after the softmax (in training)."""
    d = query.shape[-1]
    scores = query @ key.transpose(-2, -1) / math.sqrt(d)  # (..., L, S): how well each query fits each key
    if is_causal:
        scores = scores.masked_fill(~causal_mask(scores.shape[-2], scores.shape[-1], scores.device), float("-inf"))
    if attn_mask is not None:
        if attn_mask.dtype == torch.bool:
            scores = scores.masked_fill(~attn_mask, float("-inf"))
        else:
            scores = scores + attn_mask
    weights = scores.softmax(-1)  # each query's weights over the keys sum to 1
    if dropout_p:
        weights = F.dropout(weights, dropout_p)
    return weights @ value, weights


def _count_cpu_flash_attention() -> None:
    """Teach ``torch.utils.flop_counter`` the fused kernel PyTorch runs on a CPU, which it does not
    count (torch 2.14): its FLOPs are those of the explicit attention's two matrix products, the
    formula torch uses for the GPU kernels. So a model's FLOPs do not depend on which path ran."""
    from torch.utils import flop_counter as fc

    ops = torch.ops.aten
    forward = getattr(ops, "_scaled_dot_product_flash_attention_for_cpu", None)
    backward = getattr(ops, "_scaled_dot_product_flash_attention_for_cpu_backward", None)
    if forward is not None and forward not in fc.flop_registry:
        fc.register_flop_formula(forward)(lambda q, k, v, *args, out_shape=None, **kwargs:
                                          fc.sdpa_flop_count(q, k, v))
    if backward is not None and backward not in fc.flop_registry:
        fc.register_flop_formula(backward)(lambda grad, q, k, v, *args, out_shape=None, **kwargs:
                                           fc.sdpa_backward_flop_count(grad, q, k, v))


_count_cpu_flash_attention()


def check_token_ids(ids: Tensor, vocab_size: int, model: str) -> None:
    """Refuse token ids outside 0 .. ``vocab_size`` - 1 before an embedding looks them up (which
    raises "index out of range in self" on a CPU and a device-side assert on a GPU)."""
    if ids.numel() and not ids.is_meta:
        low, high = (int(v) for v in torch.aminmax(ids))
        if low < 0 or high >= vocab_size:
            raise ValueError(f"{model} has a vocabulary of {vocab_size} tokens (vocab_size), ids 0 to "
                             f"{vocab_size - 1}; got ids from {low} to {high}. Encode the text with the tokenizer "
                             f"the model was built for, or build it with vocab_size={max(high + 1, vocab_size)}")


def causal_mask(length: int, keys: int | None = None, device: torch.device | str | None = None,
                offset: int = 0) -> Tensor:
    """(L, S) boolean, True where query i may attend to key j: j <= i + ``offset`` (what a language
    model may see; ``offset``: the keys of earlier tokens, kept in a ``KVCache``, come first)."""
    return torch.ones(length, keys or length, dtype=torch.bool, device=device).tril(diagonal=offset)


class KVCache:
    """The keys and values every attention layer has computed so far, (N, heads, T, E / heads) each,
    so that generating token T + 1 computes only its own query, key and value and attends to the
    stored ones, instead of running the whole prefix through the model again. ``layers[i]`` is
    the store of layer i (a dict: "k", "v"); ``length`` the tokens it holds."""

    def __init__(self, num_layers: int) -> None:
        self.layers: list[dict[str, Tensor]] = [{} for _ in range(num_layers)]

    @property
    def length(self) -> int:
        first = self.layers[0].get("k") if self.layers else None
        return 0 if first is None else first.shape[-2]

    def clear(self) -> None:
        for store in self.layers:
            store.clear()


class MultiheadAttention(nn.Module):
    """Multi-head attention with ``nn.MultiheadAttention``'s parameters and names (batch first):
    ``in_proj_weight`` (3E, E) holds W_Q, W_K, W_V one above the other, ``in_proj_bias`` (3E),
    ``out_proj`` the output projection. Each of the ``num_heads`` heads attends in its own
    E / num_heads dimensions; their outputs are concatenated and projected.

    ``forward(query, key, value, key_padding_mask, attn_mask)`` returns (output, weights):
    ``key_padding_mask`` (N, S) and a boolean ``attn_mask`` (L, S) or (N * heads, L, S) mark with
    True what is *ignored* (nn.MultiheadAttention's convention). The weights, (N, heads, L, S), are
    returned when ``need_weights`` (averaged over the heads when ``average_attn_weights``, as
    PyTorch does), and kept in ``last_weights`` when ``keep_weights`` is set (attention maps)."""

    def __init__(self, embed_dim: int, num_heads: int, dropout: float = 0.0, bias: bool = True) -> None:
        super().__init__()
        if embed_dim % num_heads:
            raise ValueError(f"embed_dim ({embed_dim}) must be a multiple of num_heads ({num_heads}): each head "
                             f"gets embed_dim / num_heads dimensions")
        self.embed_dim, self.num_heads, self.dropout = embed_dim, num_heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * embed_dim, embed_dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * embed_dim)) if bias else None
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=bias)
        self.keep_weights = False
        self.last_weights: Tensor | None = None
        nn.init.xavier_uniform_(self.in_proj_weight)  # as nn.MultiheadAttention
        if bias:
            nn.init.zeros_(self.out_proj.bias)

    def forward(self, query: Tensor, key: Tensor, value: Tensor, key_padding_mask: Tensor | None = None,
                need_weights: bool = False, attn_mask: Tensor | None = None, average_attn_weights: bool = True,
                is_causal: bool = False, kv_cache: dict[str, Tensor] | None = None) -> tuple[Tensor, Tensor | None]:
        n, length, e = query.shape
        h = self.num_heads
        if e != self.embed_dim:
            raise ValueError(f"the queries have {e} features, this attention {self.embed_dim}")
        def heads(x: Tensor) -> Tensor:  # (N, T, E) -> (N, heads, T, E / heads)
            return x.view(n, x.shape[1], h, e // h).transpose(1, 2)

        if query is key is value:  # self-attention: Q, K and V in one matmul (PyTorch's packed projection)
            q, k, v = map(heads, F.linear(query, self.in_proj_weight, self.in_proj_bias).chunk(3, -1))
        else:  # cross-attention: the queries from one sequence, the keys and values from another
            w_q, w_k, w_v = self.in_proj_weight.chunk(3)
            b_q, b_k, b_v = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None,) * 3
            q, k, v = heads(F.linear(query, w_q, b_q)), heads(F.linear(key, w_k, b_k)), heads(F.linear(value, w_v, b_v))
        offset = 0
        if kv_cache is not None:  # self-attention while generating: the earlier tokens' keys and values first
            if kv_cache:
                offset = kv_cache["k"].shape[-2]
                k, v = torch.cat([kv_cache["k"], k], -2), torch.cat([kv_cache["v"], v], -2)
            kv_cache["k"], kv_cache["v"] = k, v
        allowed = None  # (N, heads or 1, L, S), True where a query may attend to a key
        if attn_mask is not None:
            m = ~attn_mask if attn_mask.dtype == torch.bool else attn_mask
            allowed = m.view(n, h, length, -1) if m.dim() == 3 else m
        if key_padding_mask is not None:
            if key_padding_mask.dtype != torch.bool:
                raise ValueError("key_padding_mask must be boolean: True marks a padding position, to be ignored")
            keep = ~key_padding_mask[:, None, None, :]  # (N, 1, 1, S)
            if allowed is None:
                allowed = keep
            elif allowed.dtype == torch.bool:
                allowed = allowed & keep
            else:
                allowed = allowed.masked_fill(~keep, float("-inf"))
        if is_causal and offset:  # query i is token offset + i: it sees keys 0 .. offset + i
            causal = causal_mask(length, k.shape[-2], q.device, offset)
            allowed = (causal if allowed is None else allowed & causal if allowed.dtype == torch.bool
                       else allowed.masked_fill(~causal, float("-inf")))
            is_causal = False
        p = self.dropout if self.training else 0.0
        if need_weights or self.keep_weights:  # the book's attention, which returns its weights
            out, weights = scaled_dot_product_attention(q, k, v, allowed, p, is_causal)
        else:  # PyTorch's fused kernel: the same result (tested), faster, no (L, S) weights kept
            if is_causal and allowed is not None:
                causal = causal_mask(length, k.shape[-2], q.device)
                allowed = (allowed & causal if allowed.dtype == torch.bool
                           else allowed.masked_fill(~causal, float("-inf")))
                is_causal = False
            out, weights = F.scaled_dot_product_attention(q, k, v, allowed, p, is_causal), None
        out = self.out_proj(out.transpose(1, 2).reshape(n, length, e))  # heads side by side, then projected
        if self.keep_weights:
            self.last_weights = weights.detach()
        if not need_weights:
            return out, None
        return out, weights.mean(1) if average_attn_weights else weights


@torch.no_grad()
def attention_maps(model: nn.Module, attentions: list[MultiheadAttention], *inputs) -> list[Tensor]:
    """The weights each of ``attentions`` computes when ``model`` runs on ``inputs`` in eval mode,
    each (N, heads, L, S); the model's mode is restored and its state dict not touched."""
    was_training = model.training
    model.eval()
    try:
        for a in attentions:
            a.keep_weights = True
        model(*inputs)
        return [a.last_weights for a in attentions]
    finally:
        for a in attentions:
            a.keep_weights, a.last_weights = False, None
        model.train(was_training)


class MLPBlock(nn.Sequential):
    """The position-wise feed-forward network: Linear (d -> d_ff), activation, dropout, Linear (d_ff ->
    d), dropout; torchvision's names (``mlp.0``, ``mlp.3``)."""

    def __init__(self, dim: int, mlp_dim: int, dropout: float = 0.0, activation: str = "gelu") -> None:
        # "gelu_tanh": GELU's tanh approximation, which GPT-2 used ("gelu_new" in transformers)
        act = {"gelu": nn.GELU(), "gelu_tanh": nn.GELU(approximate="tanh"), "relu": nn.ReLU()}[activation]
        super().__init__(nn.Linear(dim, mlp_dim), act, nn.Dropout(dropout), nn.Linear(mlp_dim, dim),
                         nn.Dropout(dropout))


class EncoderBlock(nn.Module):
    """One Transformer encoder layer: self-attention and the feed-forward network, each in a residual
    branch with a layer norm. ``norm_first=True`` (pre-norm: ViT, GPT-2) normalises the branch's
    input, x + f(LN(x)); ``False`` (post-norm: the original paper, BERT) the sum, LN(x + f(x)).
    torchvision's ViT names: ``ln_1``, ``self_attention``, ``ln_2``, ``mlp``."""

    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float = 0.0,
                 attention_dropout: float = 0.0, norm_first: bool = True, activation: str = "gelu",
                 eps: float = 1e-6) -> None:
        super().__init__()
        self.norm_first = norm_first
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=eps)
        self.self_attention = MultiheadAttention(hidden_dim, num_heads, dropout=attention_dropout)
        self.dropout = nn.Dropout(dropout)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=eps)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout, activation)

    def _attend(self, x: Tensor, attn_mask: Tensor | None, key_padding_mask: Tensor | None,
                is_causal: bool, kv_cache: dict[str, Tensor] | None = None) -> Tensor:
        out, _ = self.self_attention(x, x, x, key_padding_mask=key_padding_mask, attn_mask=attn_mask,
                                     is_causal=is_causal, kv_cache=kv_cache)
        return self.dropout(out)

    def forward(self, x: Tensor, attn_mask: Tensor | None = None, key_padding_mask: Tensor | None = None,
                is_causal: bool = False, kv_cache: dict[str, Tensor] | None = None) -> Tensor:
        """``is_causal``: token i attends to tokens 0 .. i only (GPT); the masks as in
        ``MultiheadAttention`` (True marks what is ignored); ``kv_cache``: this layer's store of a
        ``KVCache`` (x holds only the new tokens)."""
        if x.dim() != 3:
            raise ValueError(f"an encoder block takes (N, tokens, {self.ln_1.normalized_shape[0]}); got "
                             f"{tuple(x.shape)}")
        if self.norm_first:
            x = x + self._attend(self.ln_1(x), attn_mask, key_padding_mask, is_causal, kv_cache)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self._attend(x, attn_mask, key_padding_mask, is_causal, kv_cache))
        return self.ln_2(x + self.mlp(x))


# nn.TransformerEncoderLayer's names -> EncoderBlock's (its linear1 and linear2 are the MLP's two layers)
TORCH_LAYER_NAMES = {"self_attn.": "self_attention.", "linear1.": "mlp.0.", "linear2.": "mlp.3.",
                     "norm1.": "ln_1.", "norm2.": "ln_2."}


def from_torch_layer(layer: nn.TransformerEncoderLayer) -> EncoderBlock:
    """An ``EncoderBlock`` with the weights and settings of PyTorch's ``nn.TransformerEncoderLayer``
    (batch first), the names mapped by ``TORCH_LAYER_NAMES``."""
    if not layer.self_attn.batch_first:
        raise ValueError("build the nn.TransformerEncoderLayer with batch_first=True, as the book's blocks are")
    activation = "gelu" if layer.activation in (F.gelu,) or isinstance(layer.activation, nn.GELU) else "relu"
    block = EncoderBlock(layer.self_attn.num_heads, layer.linear1.in_features, layer.linear1.out_features,
                         dropout=layer.dropout.p, attention_dropout=layer.self_attn.dropout,
                         norm_first=layer.norm_first, activation=activation, eps=layer.norm1.eps)
    state = {}
    for name, t in layer.state_dict().items():
        for old, new in TORCH_LAYER_NAMES.items():
            if name.startswith(old):
                name = new + name[len(old):]
                break
        state[name] = t
    block.load_state_dict(state, strict=True)
    return block


class DecoderBlock(nn.Module):
    """One layer of the original Transformer's decoder (post-norm): causal self-attention, attention
    to the encoder's output (cross-attention), the feed-forward network; each a residual branch
    followed by a layer norm. ``nn.TransformerDecoderLayer``'s structure."""

    def __init__(self, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float = 0.0,
                 activation: str = "relu", eps: float = 1e-5) -> None:
        super().__init__()
        self.self_attention = MultiheadAttention(hidden_dim, num_heads, dropout=dropout)
        self.ln_1 = nn.LayerNorm(hidden_dim, eps=eps)
        self.cross_attention = MultiheadAttention(hidden_dim, num_heads, dropout=dropout)
        self.ln_2 = nn.LayerNorm(hidden_dim, eps=eps)
        self.mlp = MLPBlock(hidden_dim, mlp_dim, dropout, activation)
        self.ln_3 = nn.LayerNorm(hidden_dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor, memory: Tensor) -> Tensor:
        future = ~causal_mask(x.shape[1], device=x.device)  # True: ignored (nn.MultiheadAttention's convention)
        x = self.ln_1(x + self.dropout(self.self_attention(x, x, x, attn_mask=future)[0]))
        x = self.ln_2(x + self.dropout(self.cross_attention(x, memory, memory)[0]))
        return self.ln_3(x + self.mlp(x))


def sinusoidal_positions(length: int, dim: int) -> Tensor:
    """The original paper's position encodings (section 3.5), (length, dim):
    PE[pos, 2i] = sin(pos / 10000^(2i / dim)), PE[pos, 2i + 1] = cos(pos / 10000^(2i / dim))."""
    if dim % 2:
        raise ValueError(f"dim must be even (a sine and a cosine per frequency), got {dim}")
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    pe = torch.zeros(length, dim, dtype=torch.float64)
    pe[:, 0::2], pe[:, 1::2] = torch.sin(pos * freq), torch.cos(pos * freq)
    return pe.float()


class Transformer(nn.Module):
    """The encoder-decoder of "Attention Is All You Need", post-norm, built from this module's blocks:
    token embeddings scaled by sqrt(d_model) plus sinusoidal positions, ``num_layers`` encoder and
    decoder layers, a linear layer to the vocabulary. ``shared=True`` ties the source and target
    embeddings and the output layer into one matrix (the paper's section 3.4, with a shared
    source-target vocabulary); the output layer then has no bias of its own."""

    input_dtype = torch.long  # token ids

    def __init__(self, vocab_size: int = 37_000, d_model: int = 512, num_heads: int = 8, d_ff: int = 2048,
                 num_layers: int = 6, dropout: float = 0.1, shared: bool = True, max_len: int = 512,
                 source_len: int | None = None, name: str = "Transformer") -> None:
        super().__init__()
        self.d_model, self.vocab_size, self.source_len, self.name = d_model, vocab_size, source_len, name
        # one tensor of token ids when source_len is set (fit's data): the source, then the decoder's input
        self.input_shape = (2 * source_len,) if source_len else (max_len,)
        self.src_embed = nn.Embedding(vocab_size, d_model)
        self.tgt_embed = self.src_embed if shared else nn.Embedding(vocab_size, d_model)
        self.register_buffer("positions", sinusoidal_positions(max_len, d_model), persistent=False)
        self.encoder = nn.Sequential(OrderedDict(
            (f"layer_{i}", EncoderBlock(num_heads, d_model, d_ff, dropout, dropout, norm_first=False,
                                        activation="relu", eps=1e-5)) for i in range(num_layers)))
        self.decoder = nn.ModuleList(DecoderBlock(num_heads, d_model, d_ff, dropout) for _ in range(num_layers))
        self.generator = nn.Linear(d_model, vocab_size, bias=not shared)
        if shared:
            self.generator.weight = self.src_embed.weight
        self.dropout = nn.Dropout(dropout)
        # embeddings N(0, 1 / d_model), so that sqrt(d_model) * embedding has unit scale (tensor2tensor's
        # initialisation, which the paper's code used); PyTorch's N(0, 1) makes the tied output layer's first
        # logits ~ sqrt(d_model) too large. The other matrices keep their layers' own initialisation.
        for table in {self.src_embed, self.tgt_embed}:
            nn.init.normal_(table.weight, std=d_model ** -0.5)

    def embed(self, tokens: Tensor, table: nn.Embedding) -> Tensor:
        return self.dropout(table(tokens) * math.sqrt(self.d_model) + self.positions[: tokens.shape[1]])

    def encode(self, src: Tensor) -> Tensor:
        """(N, S) source tokens -> (N, S, d_model): the memory every decoder layer attends to."""
        check_token_ids(src, self.vocab_size, self.name)
        return self.encoder(self.embed(src, self.src_embed))

    def decode(self, tgt: Tensor, memory: Tensor) -> Tensor:
        """(N, T) target tokens so far and the memory -> (N, T, vocab) logits of the next token."""
        check_token_ids(tgt, self.vocab_size, self.name)
        x = self.embed(tgt, self.tgt_embed)
        for layer in self.decoder:
            x = layer(x, memory)
        return self.generator(x)

    def forward(self, src: Tensor, tgt: Tensor | None = None) -> Tensor:
        """(N, S) source and (N, T) target tokens (teacher forcing: the target shifted right, after
        a start token) -> (N, T, vocab). With ``source_len`` set, one tensor (N, S + T) holds both,
        the source first: the form ``train.fit`` feeds (``text.reversal_data``)."""
        if src.dim() != 2 or src.is_floating_point():
            raise ValueError(f"{self.name} takes token ids of shape (N, T), integers; got {tuple(src.shape)} "
                             f"{str(src.dtype).removeprefix('torch.')}")
        if tgt is None:
            if not self.source_len:
                raise ValueError(f"{self.name} takes (src, tgt), or one tensor of both when built with source_len")
            src, tgt = src[:, : self.source_len], src[:, self.source_len:]
        return self.decode(tgt, self.encode(src))  # (N, T, vocab): the next token's logits at every position

    @torch.no_grad()
    def greedy_decode(self, src: Tensor, steps: int, start: int) -> Tensor:
        """(N, S) source -> (N, steps) tokens, one at a time: the most likely next token, fed back
        (the paper decodes with a beam of 4; greedy is a beam of 1). The model runs in eval mode."""
        was_training = self.training
        self.eval()
        try:
            memory = self.encode(src)  # computed once: the decoder reads it at every step
            out = torch.full((len(src), 1), start, dtype=torch.long, device=src.device)
            for _ in range(steps):
                out = torch.cat([out, self.decode(out, memory)[:, -1].argmax(-1, keepdim=True)], 1)
        finally:
            self.train(was_training)
        return out[:, 1:]


@register_model
def transformer(source_len: int = 256, **kwargs) -> Transformer:
    """The encoder-decoder Transformer of "Attention Is All You Need" (``Transformer``'s options:
    ``vocab_size``, ``d_model``, ``num_heads``, ``d_ff``, ``num_layers``, ``dropout``, ``shared``,
    ``max_len``). The base model by default (63.1 M parameters with a shared 37,000-token
    vocabulary), taking rows of ``source_len`` source tokens followed by as many target tokens."""
    return Transformer(source_len=source_len, **kwargs)
