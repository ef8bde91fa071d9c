"""BERT (Devlin et al., 2019, arXiv 1810.04805): a post-norm Transformer encoder that reads in both directions.

Three learned embeddings are added for every token: the token's, its position's and its segment's
(sentence A or B), then a layer norm; ``num_layers`` of the previous chapter's ``EncoderBlock`` in
its post-norm form (the original Transformer's, LN(x + f(x))) with no causal mask: every token sees
every other, padding excepted. Two heads sit on top:

- the masked-language-model head (``cls.predictions``): dense, GELU, layer norm, then the token
  embedding transposed (tied) plus a bias: a score for every token of the vocabulary at every position;
- the pooler (``pooler.dense`` and tanh on the [CLS] token's state), which a classifier reads.

Top-level names are those of ``transformers``' ``BertModel``, ``BertForMaskedLM`` and
``BertForSequenceClassification``; ``from_transformers(state_dict)`` maps their layers' names to the
blocks' (``BERT_NAMES``; query, key and value are stacked into one ``in_proj_weight``). The result
loads strictly and gives the same outputs (tested).

One difference of behaviour, on purpose: when no ``attention_mask`` is given, transformers lets every
token attend to padding; this model ignores the positions that hold ``pad_token_id``. Given the same
mask, the two agree.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ._api import register_model
from .transformer import EncoderBlock, attention_maps, check_token_ids


class Embeddings(nn.Module):
    """token + position + segment embeddings, then a layer norm and dropout: (N, T) -> (N, T, D)."""

    def __init__(self, vocab_size: int, hidden_dim: int, max_len: int, type_vocab_size: int, dropout: float,
                 pad_token_id: int) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab_size, hidden_dim, padding_idx=pad_token_id)
        self.position_embeddings = nn.Embedding(max_len, hidden_dim)
        self.token_type_embeddings = nn.Embedding(type_vocab_size, hidden_dim)
        self.LayerNorm = nn.LayerNorm(hidden_dim, eps=1e-12)
        self.dropout = nn.Dropout(dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> Tensor:
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)  # everything is sentence A
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos) + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class Encoder(nn.Module):
    """``layer``: the post-norm blocks, each seeing the whole sequence (padding masked)."""

    def __init__(self, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int, dropout: float) -> None:
        super().__init__()
        self.layer = nn.ModuleList(EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout, dropout, norm_first=False,
                                                activation="gelu", eps=1e-12) for _ in range(num_layers))

    def forward(self, x: Tensor, padding: Tensor | None = None) -> Tensor:
        for block in self.layer:
            x = block(x, key_padding_mask=padding)
        return x


class Pooler(nn.Module):
    """dense + tanh on the first token's ([CLS]) final state: (N, T, D) -> (N, D)."""

    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_dim, hidden_dim)
        self.activation = nn.Tanh()

    def forward(self, x: Tensor) -> Tensor:
        return self.activation(self.dense(x[:, 0]))


class BertModel(nn.Module):
    """``embeddings``, ``encoder``, ``pooler`` (``add_pooling_layer=False``: none, as inside
    ``BertForMaskedLM``). ``forward(input_ids, token_type_ids, attention_mask)`` returns the final
    states (N, T, D) and the pooled [CLS] (N, D) or None."""

    input_dtype = torch.long

    def __init__(self, vocab_size: int = 30522, hidden_dim: int = 768, num_layers: int = 12, num_heads: int = 12,
                 mlp_dim: int = 3072, max_len: int = 512, type_vocab_size: int = 2, dropout: float = 0.1,
                 pad_token_id: int = 0, add_pooling_layer: bool = True) -> None:
        super().__init__()
        self.pad_token_id, self.vocab_size = pad_token_id, vocab_size
        self.embeddings = Embeddings(vocab_size, hidden_dim, max_len, type_vocab_size, dropout, pad_token_id)
        self.encoder = Encoder(num_layers, num_heads, hidden_dim, mlp_dim, dropout)
        self.pooler = Pooler(hidden_dim) if add_pooling_layer else None
        self.input_shape = (max_len,)
        init_bert(self)

    def padding(self, input_ids: Tensor, attention_mask: Tensor | None) -> Tensor | None:
        """(N, T) boolean, True at positions no token may attend to; None when there are none."""
        pad = (input_ids == self.pad_token_id) if attention_mask is None else (attention_mask == 0)
        if pad.is_meta:
            return pad
        if not pad.any():
            return None  # no mask at all: the fused kernel's fast path
        # a sequence that is all padding would leave its queries nothing to attend to (a softmax over no key:
        # NaN); like transformers (a large negative instead of -inf), it attends to all its positions instead
        return pad & ~pad.all(1, keepdim=True)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None) -> tuple[Tensor, Tensor | None]:
        if input_ids.dim() != 2 or input_ids.is_floating_point():
            raise ValueError(f"BERT takes token ids of shape (N, T), integers; got {tuple(input_ids.shape)} "
                             f"{str(input_ids.dtype).removeprefix('torch.')}")
        if input_ids.shape[1] > self.input_shape[0]:
            raise ValueError(f"BERT has positions for {self.input_shape[0]} tokens (its max_len); got "
                             f"{input_ids.shape[1]}: cut the sequences, or build it with a larger max_len")
        check_token_ids(input_ids, self.vocab_size, "BERT")
        x = self.encoder(self.embeddings(input_ids, token_type_ids), self.padding(input_ids, attention_mask))
        return x, self.pooler(x) if self.pooler is not None else None


class PredictionHeadTransform(nn.Module):
    def __init__(self, hidden_dim: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_dim, hidden_dim)
        self.transform_act_fn = nn.GELU()
        self.LayerNorm = nn.LayerNorm(hidden_dim, eps=1e-12)

    def forward(self, x: Tensor) -> Tensor:
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class LMPredictionHead(nn.Module):
    """transform, then the token embedding transposed (tied by the model) plus a bias per token."""

    def __init__(self, hidden_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.transform = PredictionHeadTransform(hidden_dim)
        self.decoder = nn.Linear(hidden_dim, vocab_size)
        self.bias = self.decoder.bias  # transformers keeps the bias under both names

    def forward(self, x: Tensor) -> Tensor:
        return self.decoder(self.transform(x))


class MLMHead(nn.Module):
    def __init__(self, hidden_dim: int, vocab_size: int) -> None:
        super().__init__()
        self.predictions = LMPredictionHead(hidden_dim, vocab_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.predictions(x)


class BertForMaskedLM(nn.Module):
    """``bert`` (no pooler) and ``cls`` (the masked-language-model head, its decoder tied to the
    token embedding): (N, T) token ids -> (N, T, vocab) logits at every position. The loss is
    taken only where a token was masked (the data mark the others -100)."""

    input_dtype = torch.long

    def __init__(self, vocab_size: int = 30522, hidden_dim: int = 768, num_layers: int = 12, num_heads: int = 12,
                 mlp_dim: int = 3072, max_len: int = 512, type_vocab_size: int = 2, dropout: float = 0.1,
                 pad_token_id: int = 0, name: str = "BERT") -> None:
        super().__init__()
        self.name = name
        self.bert = BertModel(vocab_size, hidden_dim, num_layers, num_heads, mlp_dim, max_len, type_vocab_size,
                              dropout, pad_token_id, add_pooling_layer=False)
        self.cls = MLMHead(hidden_dim, vocab_size)
        init_bert(self.cls)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied
        self.input_shape, self.vocab_size = self.bert.input_shape, vocab_size

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None, masked_positions: Tensor | None = None) -> Tensor:
        """(N, T, vocab) logits; with ``masked_positions`` (N, T), True where a token was masked,
        only those positions' (M, vocab), in reading order: the head's matrix product with the
        vocabulary then costs 15 % of the full one (Cramming's sparse prediction)."""
        x = self.bert(input_ids, token_type_ids, attention_mask)[0]
        if masked_positions is not None:
            if masked_positions.shape != input_ids.shape or masked_positions.dtype != torch.bool:
                raise ValueError(f"masked_positions marks the positions to score: True or False for every "
                                 f"token, shape {tuple(input_ids.shape)}; got {tuple(masked_positions.shape)} "
                                 f"{str(masked_positions.dtype).removeprefix('torch.')}")
            x = x[masked_positions]  # (M, D)
        return self.cls(x)

    @torch.no_grad()
    def attention_maps(self, input_ids: Tensor, token_type_ids: Tensor | None = None) -> list[Tensor]:
        """Every layer's attention weights, each (N, heads, T, T), in eval mode."""
        return attention_maps(self, [block.self_attention for block in self.bert.encoder.layer], input_ids,
                              token_type_ids)


class BertForSequenceClassification(nn.Module):
    """``bert`` (with its pooler), ``dropout``, ``classifier``: (N, T) token ids -> (N, num_classes)
    logits from the pooled [CLS] state."""

    input_dtype = torch.long

    def __init__(self, num_classes: int = 2, vocab_size: int = 30522, hidden_dim: int = 768, num_layers: int = 12,
                 num_heads: int = 12, mlp_dim: int = 3072, max_len: int = 512, type_vocab_size: int = 2,
                 dropout: float = 0.1, pad_token_id: int = 0, name: str = "BERT classifier") -> None:
        super().__init__()
        self.name = name
        self.bert = BertModel(vocab_size, hidden_dim, num_layers, num_heads, mlp_dim, max_len, type_vocab_size,
                              dropout, pad_token_id)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_dim, num_classes)
        init_bert(self.classifier)
        self.input_shape, self.vocab_size = self.bert.input_shape, vocab_size

    def forward(self, input_ids: Tensor, token_type_ids: Tensor | None = None,
                attention_mask: Tensor | None = None) -> Tensor:
        return self.classifier(self.dropout(self.bert(input_ids, token_type_ids, attention_mask)[1]))


def init_bert(module: nn.Module) -> None:
    """BERT's initialisation: weights N(0, 0.02), biases 0, layer norms 1 and 0, padding row 0."""
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if isinstance(m, nn.Linear) and m.bias is not None:
                nn.init.zeros_(m.bias)
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                nn.init.zeros_(m.weight[m.padding_idx])
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for name, p in module.named_parameters():
        if name.endswith("in_proj_weight"):
            nn.init.normal_(p, std=0.02)


# transformers' BERT layer names -> the blocks' (query, key and value are stacked: BERT_QKV)
BERT_NAMES = {"attention.output.dense.": "self_attention.out_proj.", "attention.output.LayerNorm.": "ln_1.",
              "intermediate.dense.": "mlp.0.", "output.dense.": "mlp.3.", "output.LayerNorm.": "ln_2."}
BERT_QKV = ("attention.self.query.", "attention.self.key.", "attention.self.value.")


def from_transformers(state_dict: dict[str, Tensor]) -> dict[str, Tensor]:
    """A state dict of transformers' ``BertModel``, ``BertForMaskedLM`` or
    ``BertForSequenceClassification`` as this module's: in every layer, query, key and value
    stacked into ``self_attention.in_proj_weight`` (3D, D) and ``in_proj_bias``, the other names
    mapped by ``BERT_NAMES``; buffers (``position_ids``, ``token_type_ids``) dropped."""
    out, qkv = {}, {}
    for name, t in state_dict.items():
        if name.endswith(("embeddings.position_ids", "embeddings.token_type_ids")):
            continue
        q = next((k for k in BERT_QKV if k in name), None)
        if q is not None:
            prefix, kind = name.split(q)  # "bert.encoder.layer.0.", "weight"
            qkv.setdefault((prefix, kind), {})[q] = t
            continue
        for old, new in BERT_NAMES.items():
            if ".layer." in name and old in name:
                name = name.replace(old, new)
                break
        out[name] = t
    for (prefix, kind), parts in qkv.items():
        out[f"{prefix}self_attention.in_proj_{kind}"] = torch.cat([parts[k] for k in BERT_QKV])
    return out


@register_model
def bert(vocab_size: int = 30522, hidden_dim: int = 768, num_layers: int = 12, num_heads: int = 12,
         mlp_dim: int = 3072, max_len: int = 512, **kwargs) -> BertForMaskedLM:
    """BERT with its masked-language-model head; BERT-base by default (12 layers, 12 heads, width
    768, 512 positions, 30,522 WordPiece tokens; its ``bert`` part has 108,891,648 parameters, and
    ``BertModel`` with the pooler 109,482,240)."""
    base = (num_layers, hidden_dim, vocab_size) == (12, 768, 30522)
    name = "BERT-base" if base else f"BERT-{num_layers}x{hidden_dim}"
    return BertForMaskedLM(vocab_size, hidden_dim, num_layers, num_heads, mlp_dim, max_len, name=name, **kwargs)


@register_model
def bert_classifier(num_classes: int = 2, vocab_size: int = 30522, hidden_dim: int = 768, num_layers: int = 12,
                    num_heads: int = 12, mlp_dim: int = 3072, max_len: int = 512,
                    **kwargs) -> BertForSequenceClassification:
    """BERT with the pooler and a linear classifier on the [CLS] state (fine-tuning)."""
    name = f"BERT-{num_layers}x{hidden_dim} classifier"
    return BertForSequenceClassification(num_classes, vocab_size, hidden_dim, num_layers, num_heads, mlp_dim,
                                         max_len, name=name, **kwargs)


class BagOfWords(nn.Module):
    """The baseline a fine-tuned BERT must beat: multinomial logistic regression on a text's token
    frequencies, word order ignored. One weight per (token, class), averaged over the text's tokens
    (padding left out), plus a bias per class: (N, T) -> (N, num_classes)."""

    input_dtype = torch.long

    def __init__(self, num_classes: int, vocab_size: int, max_len: int = 128, pad_token_id: int = 0) -> None:
        super().__init__()
        self.name, self.input_shape, self.vocab_size = "bag of words", (max_len,), vocab_size
        self.weights = nn.EmbeddingBag(vocab_size, num_classes, mode="mean", padding_idx=pad_token_id)
        self.bias = nn.Parameter(torch.zeros(num_classes))
        nn.init.zeros_(self.weights.weight)

    def forward(self, input_ids: Tensor) -> Tensor:
        return self.weights(input_ids) + self.bias


@register_model
def bag_of_words(num_classes: int = 2, vocab_size: int = 30522, max_len: int = 128,
                 pad_token_id: int = 0) -> BagOfWords:
    """Logistic regression on token frequencies (``BagOfWords``)."""
    return BagOfWords(num_classes, vocab_size, max_len, pad_token_id)
