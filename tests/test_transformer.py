"""Attention from scratch, proven equal to PyTorch's; the ViTs key-compatible with torchvision's."""

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cnn_book.inspect import count_parameters
from cnn_book.models import get_model
from cnn_book.models.transformer import (
    MultiheadAttention,
    Transformer,
    causal_mask,
    from_torch_layer,
    scaled_dot_product_attention,
    sinusoidal_positions,
)
from cnn_book.models.vit import attention_rollout

torch.manual_seed(0)


def _qkv(n=2, h=3, length=5, s=7, e=8):
    g = torch.Generator().manual_seed(1)
    return (torch.randn(n, h, length, e, generator=g), torch.randn(n, h, s, e, generator=g),
            torch.randn(n, h, s, e, generator=g))


def test_attention_equals_pytorch_s_with_and_without_masks():
    q, k, v = _qkv()
    out, w = scaled_dot_product_attention(q, k, v)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v), atol=1e-6)
    assert torch.allclose(w.sum(-1), torch.ones(2, 3, 5))  # each query's weights sum to 1
    # a boolean mask: True takes part (F.scaled_dot_product_attention's convention)
    mask = torch.rand(5, 7, generator=torch.Generator().manual_seed(2)) > 0.4
    mask[:, 0] = True  # every query keeps one key
    out, w = scaled_dot_product_attention(q, k, v, attn_mask=mask)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), atol=1e-6)
    assert (w[..., ~mask] == 0).all()  # a masked key gets no weight
    # a float mask is added to the scores
    bias = torch.randn(5, 7)
    assert torch.allclose(scaled_dot_product_attention(q, k, v, attn_mask=bias)[0],
                          F.scaled_dot_product_attention(q, k, v, attn_mask=bias), atol=1e-6)
    # causal: query i sees keys 0 .. i
    q, k, v = _qkv(s=5)
    out, w = scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(out, F.scaled_dot_product_attention(q, k, v, is_causal=True), atol=1e-6)
    assert (w.triu(1) == 0).all() and torch.equal(causal_mask(3), torch.tensor([[1, 0, 0], [1, 1, 0], [1, 1, 1]],
                                                                                 dtype=torch.bool))


def test_attention_by_hand_on_a_case_small_enough_to_follow():
    q = torch.tensor([[1.0, 0.0]])
    k = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    v = torch.tensor([[10.0], [20.0]])
    out, w = scaled_dot_product_attention(q, k, v)
    a = torch.tensor(1 / 2**0.5).exp()  # score of the first key 1/sqrt(2), of the second 0
    assert torch.allclose(w, torch.tensor([[a / (a + 1), 1 / (a + 1)]]))
    assert torch.allclose(out, w @ v)


@pytest.mark.parametrize("bias", [True, False])
def test_multi_head_attention_equals_nn_multiheadattention_with_the_same_weights(bias):
    ref = nn.MultiheadAttention(16, 4, bias=bias, batch_first=True).eval()
    ours = MultiheadAttention(16, 4, bias=bias).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    g = torch.Generator().manual_seed(3)
    x, mem = torch.randn(2, 5, 16, generator=g), torch.randn(2, 7, 16, generator=g)
    a, wa = ours(x, mem, mem, need_weights=True)
    b, wb = ref(x, mem, mem, need_weights=True)
    assert torch.allclose(a, b, atol=1e-6) and torch.allclose(wa, wb, atol=1e-6)
    a, wa = ours(x, x, x, need_weights=True, average_attn_weights=False)
    b, wb = ref(x, x, x, need_weights=True, average_attn_weights=False)
    assert wa.shape == (2, 4, 5, 5) and torch.allclose(wa, wb, atol=1e-6) and torch.allclose(a, b, atol=1e-6)
    # nn.MultiheadAttention's masks: True is ignored, the opposite of F.scaled_dot_product_attention
    pad = torch.tensor([[False] * 6 + [True], [False] * 4 + [True] * 3])
    future = ~causal_mask(5, 7)
    for kw in ({"key_padding_mask": pad}, {"attn_mask": future}, {"key_padding_mask": pad, "attn_mask": future}):
        a, wa = ours(x, mem, mem, need_weights=True, **kw)
        b, wb = ref(x, mem, mem, need_weights=True, **kw)
        assert torch.allclose(a, b, atol=1e-6), kw
        assert torch.allclose(wa, wb, atol=1e-6), kw
        # in training, without weights asked for, the fused kernel runs: the same output, no weights
        fast, none = ours.train()(x, mem, mem, **kw)
        ours.eval()
        assert none is None and torch.allclose(fast, a, atol=1e-6), kw
    fast, _ = ours.train()(x, x, x, is_causal=True, attn_mask=~causal_mask(5))
    assert torch.allclose(fast, ours.eval()(x, x, x, is_causal=True, need_weights=True)[0], atol=1e-6)
    # the FLOP counter sees the attention's two products in eval mode (the summaries' figures)
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        ours(x, x, x)
    projections = 2 * (4 * 2 * 5 * 16 * 16)  # Q, K, V and the output, 2 FLOPs a multiply-add
    assert counter.get_total_flops() == projections + 2 * (2 * 2 * 5 * 5 * 16)
    assert (ours(x, mem, mem, key_padding_mask=pad, need_weights=True)[1][1, :, 4:] == 0).all()
    with pytest.raises(ValueError, match="must be a multiple of num_heads"):
        MultiheadAttention(10, 4)
    with pytest.raises(ValueError, match="must be boolean"):
        ours(x, mem, mem, key_padding_mask=pad.float())


@pytest.mark.parametrize("norm_first", [True, False])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_an_encoder_block_equals_nn_transformerencoderlayer_with_the_same_weights(norm_first, activation):
    ref = nn.TransformerEncoderLayer(32, 4, dim_feedforward=64, dropout=0.1, activation=activation,
                                     batch_first=True, norm_first=norm_first).eval()
    ours = from_torch_layer(ref).eval()
    assert ours.norm_first == norm_first
    x = torch.randn(3, 6, 32, generator=torch.Generator().manual_seed(4))
    pad = torch.zeros(3, 6, dtype=torch.bool)
    pad[1, 4:] = True
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x), atol=1e-5)
        assert torch.allclose(ours(x, key_padding_mask=pad)[~pad], ref(x, src_key_padding_mask=pad)[~pad], atol=1e-5)
        causal = ~causal_mask(6)
        assert torch.allclose(ours(x, attn_mask=causal), ref(x, src_mask=causal), atol=1e-5)
    assert count_parameters(ours) == count_parameters(ref)
    with pytest.raises(ValueError, match="an encoder block takes"):
        ours(x[0])


def test_sinusoidal_positions_are_the_paper_s():
    pe = sinusoidal_positions(50, 16)
    assert pe.shape == (50, 16) and torch.allclose(pe[0, 0::2], torch.zeros(8)) and torch.allclose(pe[0, 1::2],
                                                                                                     torch.ones(8))
    pos, i = 7, 3
    assert pe[pos, 2 * i].item() == pytest.approx(torch.sin(torch.tensor(pos / 10000 ** (2 * i / 16))).item(), abs=1e-6)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(torch.cos(torch.tensor(pos / 10000 ** (2 * i / 16))).item(),
                                                      abs=1e-6)
    with pytest.raises(ValueError, match="must be even"):
        sinusoidal_positions(4, 5)


def test_the_original_transformer_s_parameters_add_up():
    with torch.device("meta"):
        base = Transformer()  # d_model 512, 8 heads, d_ff 2048, N = 6, a shared 37,000-token vocabulary
        untied = Transformer(shared=False)
    enc_layer = 4 * 512 * 512 + 4 * 512 + 2 * 512 * 2048 + 2048 + 512 + 2 * 2 * 512  # attention, FFN, 2 norms
    dec_layer = 2 * (4 * 512 * 512 + 4 * 512) + 2 * 512 * 2048 + 2048 + 512 + 3 * 2 * 512
    assert (enc_layer, dec_layer) == (3_152_384, 4_204_032)
    layers = 6 * (enc_layer + dec_layer)
    assert count_parameters(base) == layers + 37_000 * 512  # one matrix for both embeddings and the output
    assert count_parameters(untied) == layers + 3 * 37_000 * 512 + 37_000
    # nn.Transformer(): the same layers, no embeddings, plus a final norm after each stack
    assert count_parameters(nn.Transformer(batch_first=True)) == layers + 2 * 2 * 512 == 44_140_544


def test_the_original_transformer_runs_and_its_decoder_is_causal():
    model = Transformer(vocab_size=50, d_model=32, num_heads=4, d_ff=64, num_layers=2, dropout=0.0).eval()
    src, tgt = torch.randint(0, 50, (2, 9)), torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        out = model(src, tgt)
        changed = tgt.clone()
        changed[:, 4:] = (changed[:, 4:] + 1) % 50
        again = model(src, changed)
    assert out.shape == (2, 6, 50)
    assert torch.allclose(out[:, :4], again[:, :4], atol=1e-5)  # a later token cannot change an earlier output
    assert not torch.allclose(out[:, 4:], again[:, 4:])


# --- the Vision Transformers --------------------------------------------------------------------

TORCHVISION_VIT = {"vit_b_16": 86_567_656, "vit_b_32": 88_224_232, "vit_l_16": 304_326_632}


@pytest.mark.parametrize("name", list(TORCHVISION_VIT))
def test_torchvision_s_vit_loads_strictly_and_gives_the_same_logits(name):
    torch.manual_seed(0)
    ref = torchvision.models.get_model(name, weights=None).eval()
    for p in ref.heads.parameters():  # torchvision starts the head at zero: make the logits say something
        nn.init.normal_(p, std=0.02)
    with torch.device("meta"):  # ours is built without weights of its own: it takes the reference's
        ours = get_model(name).eval()
    assert list(ours.state_dict()) == list(ref.state_dict())  # same keys, same order
    ours.load_state_dict(ref.state_dict(), strict=True, assign=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        a, b = ours(x), ref(x)
    assert a.shape == (2, 1000) and torch.allclose(a, b, rtol=1e-4, atol=1e-5), (a - b).abs().max()
    assert count_parameters(ours) == count_parameters(ref) == TORCHVISION_VIT[name]


def test_a_vit_takes_any_channels_classes_and_size_and_shows_its_attention():
    model = get_model("vit", num_classes=10, in_channels=1).eval()  # 28x28, 4x4 patches: 49 + 1 tokens
    x = torch.randn(3, 1, 28, 28)
    assert model(x).shape == (3, 10) and model.seq_length == 50
    keys = list(model.state_dict())
    maps = model.attention_maps(x)
    assert list(model.state_dict()) == keys  # retrieving the maps changes no state
    assert len(maps) == 6 and maps[0].shape == (3, 4, 50, 50)
    assert torch.allclose(maps[-1].sum(-1), torch.ones(3, 4, 50), atol=1e-5)
    rollout = attention_rollout(maps)
    assert rollout.shape == (3, 50, 50) and torch.allclose(rollout.sum(-1), torch.ones(3, 50), atol=1e-4)
    # the patch embedding is a linear layer on flattened patches
    patches = x.unfold(2, 4, 4).unfold(3, 4, 4).permute(0, 2, 3, 1, 4, 5).reshape(3, 49, 16)
    w = model.conv_proj.weight.reshape(128, 16)
    assert torch.allclose(model.tokens(x)[:, 1:], patches @ w.T + model.conv_proj.bias, atol=1e-5)
    with torch.device("meta"):  # shapes only
        grey = get_model("vit_b_16", in_channels=1, num_classes=10, image_size=32)
    assert grey(torch.randn(1, 1, 32, 32, device="meta")).shape == (1, 10)
    with pytest.raises(ValueError, match="whole number of patches"):
        get_model("vit", image_size=30, patch_size=4)
    with pytest.raises(ValueError, match="expects"):
        model(torch.randn(1, 3, 28, 28))


def test_a_small_vit_trains_through_fit(small_fmnist):
    from cnn_book import train

    torch.manual_seed(0)
    model = get_model("vit", num_layers=2, hidden_dim=32, mlp_dim=64)  # 28x28 grey, 4x4 patches
    hist = train.fit(model, small_fmnist, epochs=2, batch_size=64, lr=2e-3, device="cpu")
    assert hist["train_loss"][-1] < hist["train_loss"][0] and hist["test_acc"][-1] > 0.3  # chance is 0.1


def test_a_query_with_no_key_left_gets_zeros_or_nan_by_the_path_it_takes():
    """Chapter 13's sentence, as torch 2.14 behaves: nn.MultiheadAttention gives a fully masked
    query zeros on the fused path (training, no weights asked for) and NaN with need_weights=True
    or on its evaluation fast path; F.scaled_dot_product_attention gives zeros; a hand-written
    softmax NaN. The book's MultiheadAttention: zeros without weights, NaN with them."""
    from cnn_book.models.transformer import MultiheadAttention

    torch.manual_seed(0)
    x = torch.randn(2, 4, 8)
    padding = torch.zeros(2, 4, dtype=torch.bool)
    padding[1] = True  # every key of the second sequence hidden
    reference = nn.MultiheadAttention(8, 2, batch_first=True)
    ours = MultiheadAttention(8, 2)

    def nan(m, train, need_weights):
        m.train(train)
        with torch.set_grad_enabled(train):
            out, _ = m(x, x, x, key_padding_mask=padding, need_weights=need_weights)
        assert not out[0].isnan().any()  # the sequence with keys is never touched
        return bool(out[1].isnan().all()), bool((out[1] == out[1].flatten()[0]).all())

    assert nan(reference, True, False) == (False, True)  # finite: the same value everywhere (the bias)
    assert nan(reference, True, True)[0] and nan(reference, False, False)[0] and nan(reference, False, True)[0]
    assert nan(ours, True, False)[0] is False and nan(ours, False, False)[0] is False
    assert nan(ours, True, True)[0] and nan(ours, False, True)[0]
    q = torch.randn(1, 1, 3, 4)
    none = torch.zeros(1, 1, 3, 3, dtype=torch.bool)
    assert (F.scaled_dot_product_attention(q, q, q, attn_mask=none) == 0).all()
    assert (q @ q.transpose(-2, -1)).masked_fill(~none, float("-inf")).softmax(-1).isnan().all()


def test_the_reversal_task_feeds_the_encoder_decoder_through_fit_s_one_tensor():
    """text.reversal_data packs the source and the decoder's input into one row; the Transformer
    built with source_len splits it, gives the same logits as (src, tgt), and decodes greedily."""
    from cnn_book import recipes, text
    from cnn_book.models import get_model

    data = text.reversal_data(n_train=8, n_test=4, length=5, symbols=7, seed=1)
    x, y = data.train_x, data.train_y
    assert x.shape == (8, 10) and y.shape == (8, 5) and data.vocab_size == 8
    assert torch.equal(y, x[:, :5].flip(1))  # the target is the source reversed
    assert (x[:, 5] == 7).all() and torch.equal(x[:, 6:], y[:, :-1])  # start token, then the target shifted
    torch.manual_seed(0)
    model = get_model("transformer", vocab_size=8, d_model=16, num_heads=2, d_ff=32, num_layers=2,
                      dropout=0.0, source_len=5, max_len=8).eval()
    assert model.input_shape == (10,) and model.input_dtype == torch.long
    with torch.no_grad():
        packed, apart = model(x), model(x[:, :5], x[:, 5:])
    assert packed.shape == (8, 5, 8) and torch.equal(packed, apart)
    # greedy decoding, step by step, is what the teacher-forced pass gives when fed its own outputs
    out = model.greedy_decode(x[:, :5], 5, start=7)
    with torch.no_grad():
        again = model(x[:, :5], torch.cat([torch.full((8, 1), 7), out[:, :-1]], 1)).argmax(-1)
    assert out.shape == (8, 5) and torch.equal(out, again)
    r = recipes.RECIPES["transformer_reverse"]["cpu"]
    assert r.input_shape == (20,) and r.task == "language_model" and r.decay == "matrices"
    from cnn_book.models.transformer import Transformer

    with pytest.raises(ValueError, match="source_len"):  # the class without source_len takes (src, tgt)
        Transformer(vocab_size=8, d_model=16, num_heads=2, d_ff=32, num_layers=1)(x)
