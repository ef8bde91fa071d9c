"""The Vision Transformer (Dosovitskiy et al., 2021, arXiv 2010.11929): an image as a sequence of patches.

The image is cut into P x P patches, each flattened and projected to ``hidden_dim`` numbers (one
convolution with kernel and stride P does both); a learned class token is put in front, learned
position embeddings are added, and a stack of pre-norm encoder blocks (``models.transformer``)
mixes the tokens. The class token's final state, after a layer norm, goes to the linear head.

Key-compatible with torchvision's ``VisionTransformer`` (the state-dict layout it uses today:
``conv_proj``, ``class_token``, ``encoder.pos_embedding``, ``encoder.layers.encoder_layer_<i>``,
``encoder.ln``, ``heads.head``): its weights load strictly and give the same logits. Unlike
torchvision's, the patch projection takes ``in_channels``.
"""

from __future__ import annotations

import math
from collections import OrderedDict

import torch
from torch import Tensor, nn

from ._api import register_model
from .blocks import check_input, param_dtype
from .transformer import EncoderBlock, attention_maps


class Encoder(nn.Module):
    """Position embeddings (learned, one per token), dropout, the blocks, a final layer norm."""

    def __init__(self, seq_length: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int,
                 dropout: float = 0.0, attention_dropout: float = 0.0) -> None:
        super().__init__()
        self.pos_embedding = nn.Parameter(torch.empty(1, seq_length, hidden_dim).normal_(std=0.02))  # as torchvision
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.Sequential(OrderedDict(
            (f"encoder_layer_{i}", EncoderBlock(num_heads, hidden_dim, mlp_dim, dropout, attention_dropout))
            for i in range(num_layers)))
        self.ln = nn.LayerNorm(hidden_dim, eps=1e-6)

    def forward(self, x: Tensor) -> Tensor:
        return self.ln(self.layers(self.dropout(x + self.pos_embedding)))


class VisionTransformer(nn.Module):
    """ViT: ``conv_proj`` (patches -> tokens), ``class_token``, ``encoder``, ``heads``; (N, C, H, W) ->
    (N, num_classes). ``attention_maps(x)`` returns every layer's attention weights per head."""

    def __init__(self, image_size: int, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int,
                 mlp_dim: int, num_classes: int = 1000, in_channels: int = 3, dropout: float = 0.0,
                 attention_dropout: float = 0.0, name: str = "ViT") -> None:
        super().__init__()
        if image_size % patch_size:
            raise ValueError(f"the image ({image_size} px) must be a whole number of patches of {patch_size} px")
        self.name = name
        self.input_shape = (in_channels, image_size, image_size)
        self.patch_size, self.hidden_dim = patch_size, hidden_dim
        self.conv_proj = nn.Conv2d(in_channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
        self.class_token = nn.Parameter(torch.zeros(1, 1, hidden_dim))
        self.seq_length = (image_size // patch_size) ** 2 + 1  # the patches and the class token
        self.encoder = Encoder(self.seq_length, num_layers, num_heads, hidden_dim, mlp_dim, dropout,
                               attention_dropout)
        self.heads = nn.Sequential(OrderedDict(head=nn.Linear(hidden_dim, num_classes)))
        # torchvision's initialisation: the projection as a layer of fan-in C P^2, the head at zero,
        # the MLPs' weights Xavier-uniform with tiny biases
        fan_in = in_channels * patch_size * patch_size
        nn.init.trunc_normal_(self.conv_proj.weight, std=math.sqrt(1 / fan_in))
        nn.init.zeros_(self.conv_proj.bias)
        nn.init.zeros_(self.heads.head.weight)
        nn.init.zeros_(self.heads.head.bias)
        for block in self.encoder.layers:
            for m in block.mlp:
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
                    nn.init.normal_(m.bias, std=1e-6)

    fixed_size = True  # the position embeddings fix the number of patches, so the image size

    @property
    def features(self) -> nn.Module:
        """The encoder (the book's name for the part before the head)."""
        return self.encoder

    @property
    def classifier(self) -> nn.Module:
        """The head (torchvision's ``heads``)."""
        return self.heads

    def no_weight_decay(self) -> set[str]:
        """What ``train.param_groups(decay="matrices")`` spares besides biases and norms: the class
        token and the position embeddings, as timm does (they are 3-D, not weight matrices)."""
        return {"class_token", "encoder.pos_embedding"}

    def tokens(self, x: Tensor) -> Tensor:
        """(N, C, H, W) -> (N, 1 + patches, hidden_dim): the class token, then one token per patch,
        row by row, before the position embeddings."""
        check_input(x, type(self).__name__, self.input_shape[0], size=self.input_shape[1], dtype=param_dtype(self))
        x = self.conv_proj(x)  # (N, D, H/P, W/P): each patch projected to D numbers
        x = x.flatten(2).transpose(1, 2)  # (N, patches, D)
        return torch.cat([self.class_token.expand(len(x), -1, -1), x], dim=1)

    def forward(self, x: Tensor) -> Tensor:
        x = self.encoder(self.tokens(x))
        return self.heads(x[:, 0])  # the class token's state decides

    @torch.no_grad()
    def attention_maps(self, x: Tensor) -> list[Tensor]:
        """Every layer's attention weights for ``x``, each (N, heads, tokens, tokens): row i is where
        token i looks (token 0 is the class token). The model runs in eval mode; the state dict is
        not touched."""
        return attention_maps(self, [block.self_attention for block in self.encoder.layers], x)


def attention_rollout(maps: list[Tensor]) -> Tensor:
    """Attention rollout (Abnar and Zuidema, 2020): how much each token's final state draws on each
    input token, through every layer. Per layer, the weights averaged over the heads plus the
    identity (the residual path), rows renormalised; the layers' matrices multiplied in order.
    (N, tokens, tokens); row 0 over the patches is the class token's view of the image."""
    result = None
    for w in maps:
        a = w.mean(1)  # (N, T, T), averaged over the heads
        a = a + torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(-1, keepdim=True)
        result = a if result is None else a @ result
    return result


def _vit(name: str, patch_size: int, num_layers: int, num_heads: int, hidden_dim: int, mlp_dim: int,
         num_classes: int, in_channels: int, image_size: int, **kwargs) -> VisionTransformer:
    return VisionTransformer(image_size, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes,
                             in_channels, name=name, **kwargs)


@register_model
def vit_b_16(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, **kwargs) -> VisionTransformer:
    """ViT-B/16: 16x16 patches, 12 layers, 12 heads, width 768, MLP 3072 (86,567,656 parameters)."""
    return _vit("ViT-B/16", 16, 12, 12, 768, 3072, num_classes, in_channels, image_size, **kwargs)


@register_model
def vit_b_32(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, **kwargs) -> VisionTransformer:
    """ViT-B/32: 32x32 patches, otherwise ViT-B (88,224,232 parameters)."""
    return _vit("ViT-B/32", 32, 12, 12, 768, 3072, num_classes, in_channels, image_size, **kwargs)


@register_model
def vit_l_16(num_classes: int = 1000, in_channels: int = 3, image_size: int = 224, **kwargs) -> VisionTransformer:
    """ViT-L/16: 16x16 patches, 24 layers, 16 heads, width 1024, MLP 4096 (304,326,632 parameters)."""
    return _vit("ViT-L/16", 16, 24, 16, 1024, 4096, num_classes, in_channels, image_size, **kwargs)


@register_model
def vit(num_classes: int = 10, in_channels: int = 1, image_size: int = 28, patch_size: int = 4,
        num_layers: int = 6, num_heads: int = 4, hidden_dim: int = 128, mlp_dim: int = 256,
        **kwargs) -> VisionTransformer:
    """A ViT of any size; the defaults are a small one for 28x28 Fashion-MNIST (7x7 patches of 4x4)."""
    name = f"ViT-{num_layers}x{hidden_dim}/{patch_size}"
    return _vit(name, patch_size, num_layers, num_heads, hidden_dim, mlp_dim, num_classes, in_channels,
                image_size, **kwargs)
