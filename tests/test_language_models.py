"""GPT and BERT: equal to transformers' models with the same weights, counted, masked as the papers
mask, and trained through fit; the King James corpus loader and the tokenisers."""

import math
import stat
import sys

import pytest
import torch

from cnn_book import plot, recipes, text, train
from cnn_book.data import DataError
from cnn_book.inspect import count_parameters
from cnn_book.models import get_model
from cnn_book.tasks import get_task

transformers = pytest.importorskip("transformers")  # a test-only dependency (requirements.txt pins it)
gpt = sys.modules["cnn_book.models.gpt"]
bert = sys.modules["cnn_book.models.bert"]

SMALL_BERT = dict(vocab_size=100, hidden_dim=64, num_layers=2, num_heads=4, mlp_dim=128, max_len=32)


def _bert_config(**extra):
    return transformers.BertConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128, max_position_embeddings=32, **extra)


# ---------------------------------------------------------------------------------------------
# Equal to the reference


def test_gpt2_carries_transformers_weights_and_gives_the_same_logits():
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=32,
                                  bos_token_id=0, eos_token_id=0)
    ref = transformers.GPT2LMHeadModel(cfg).eval()
    ours = get_model("gpt2", vocab_size=100, block_size=32, num_layers=2, num_heads=4, hidden_dim=64).eval()
    state = gpt.from_transformers(ref.state_dict())
    assert state["transformer.h.0.self_attention.in_proj_weight"].shape == (192, 64)  # Conv1D's (64, 192), transposed
    ours.load_state_dict(state, strict=True)
    x = torch.randint(0, 100, (3, 32))
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(x).logits, atol=1e-5)
    assert count_parameters(ours) == count_parameters(ref)
    assert ours.lm_head.weight is ours.transformer.wte.weight  # tied, as GPT-2's


def test_bert_carries_transformers_weights_with_and_without_padding():
    torch.manual_seed(0)
    x = torch.randint(1, 100, (3, 20))
    types = torch.randint(0, 2, (3, 20))
    mask = torch.ones(3, 20, dtype=torch.long)
    mask[0, 14:] = 0
    ref = transformers.BertForMaskedLM(_bert_config()).eval()
    ours = get_model("bert", **SMALL_BERT).eval()
    ours.load_state_dict(bert.from_transformers(ref.state_dict()), strict=True)
    with torch.no_grad():
        want = ref(input_ids=x, token_type_ids=types, attention_mask=mask).logits
        assert torch.allclose(ours(x, types, mask), want, atol=1e-5)
        # no mask given: ours ignores the pad token's positions, which is what the mask above says
        padded = x.masked_fill(mask == 0, 0)
        want = ref(input_ids=padded, token_type_ids=types, attention_mask=mask).logits
        assert torch.allclose(ours(padded, types), want, atol=1e-5)
    assert count_parameters(ours) == count_parameters(ref)


def test_bert_model_and_classifier_carry_transformers_weights():
    torch.manual_seed(0)
    x = torch.randint(1, 100, (2, 16))
    ref = transformers.BertModel(_bert_config()).eval()
    ours = bert.BertModel(100, 64, 2, 4, 128, 32).eval()
    ours.load_state_dict(bert.from_transformers(ref.state_dict()), strict=True)
    with torch.no_grad():
        out = ref(input_ids=x)
        hidden, pooled = ours(x)
        assert torch.allclose(hidden, out.last_hidden_state, atol=1e-5)
        assert torch.allclose(pooled, out.pooler_output, atol=1e-5)
    ref = transformers.BertForSequenceClassification(_bert_config(num_labels=6)).eval()
    ours = get_model("bert_classifier", num_classes=6, **SMALL_BERT).eval()
    ours.load_state_dict(bert.from_transformers(ref.state_dict()), strict=True)
    with torch.no_grad():
        assert torch.allclose(ours(x), ref(input_ids=x).logits, atol=1e-5)


def test_the_published_sizes_are_counted():
    with torch.device("meta"):
        assert count_parameters(get_model("gpt2")) == 124_439_808  # GPT-2 small, the head tied to wte
        assert count_parameters(transformers.GPT2LMHeadModel(transformers.GPT2Config())) == 124_439_808
        assert count_parameters(bert.BertModel()) == 109_482_240  # BERT-base with its pooler ("110M")
        assert count_parameters(transformers.BertModel(transformers.BertConfig())) == 109_482_240
        mlm = get_model("bert")
        assert count_parameters(mlm.bert) == 109_482_240 - (768 * 768 + 768)  # no pooler inside the MLM model
        # the MLM head adds a dense layer, a layer norm and a bias per token; its decoder is the embedding
        assert count_parameters(mlm) - count_parameters(mlm.bert) == 768 * 768 + 768 + 2 * 768 + 30522


# ---------------------------------------------------------------------------------------------
# Masks


def test_gpt_s_causal_mask_hides_the_future():
    torch.manual_seed(0)
    model = get_model("gpt2", vocab_size=50, block_size=16, num_layers=2, num_heads=2, hidden_dim=32).eval()
    x = torch.randint(0, 50, (1, 16))
    y = x.clone()
    y[0, 10:] = (y[0, 10:] + 1) % 50  # change the tokens from position 10 on
    with torch.no_grad():
        a, b = model(x), model(y)
        assert torch.allclose(a[0, :10], b[0, :10], atol=1e-6)  # positions 0-9 cannot see them
        assert not torch.allclose(a[0, 10:], b[0, 10:])
        maps = model.attention_maps(x)
    assert len(maps) == 2 and maps[0].shape == (1, 2, 16, 16)
    assert torch.all(maps[0][0].triu(1) == 0) and torch.allclose(maps[0].sum(-1), torch.ones(1, 2, 16))


def test_bert_sees_both_sides():
    torch.manual_seed(0)
    model = get_model("bert", **SMALL_BERT).eval()
    x = torch.randint(5, 100, (1, 16))
    y = x.clone()
    y[0, 12] = (y[0, 12] + 1) % 95 + 5
    with torch.no_grad():
        assert not torch.allclose(model(x)[0, 3], model(y)[0, 3])  # an earlier position sees a later token


def test_the_masking_rule_is_bert_s_80_10_10():
    specials = (0, 1, 2, 3, 4)
    masking = text.Masking(mask_id=4, vocab_size=1000, special_ids=specials)
    ids = torch.randint(5, 1000, (400, 128))
    ids[:, 0], ids[:, -1] = 2, 3  # [CLS] ... [SEP]
    inputs, targets = text.mask_tokens(ids, masking, torch.Generator().manual_seed(0))
    chosen = targets != text.IGNORE
    assert torch.equal(targets[chosen], ids[chosen])  # a target is the original token
    assert torch.equal(inputs[~chosen], ids[~chosen])  # what is not chosen is left alone
    assert not chosen[:, 0].any() and not chosen[:, -1].any()  # never a special token
    n = chosen.sum().item()
    assert abs(n / (400 * 126) - 0.15) < 0.005
    masked = (inputs == 4) & chosen
    kept = (inputs == ids) & chosen
    swapped = chosen & ~masked & ~kept
    assert abs(masked.sum().item() / n - 0.8) < 0.01
    assert abs(kept.sum().item() / n - 0.1) < 0.01  # (a random token equal to the original counts here: 0.1 %)
    assert abs(swapped.sum().item() / n - 0.1) < 0.01
    assert not torch.isin(inputs[swapped], torch.tensor(specials)).any()  # random tokens are ordinary ones
    again = text.mask_tokens(ids, masking, torch.Generator().manual_seed(0))
    assert torch.equal(again[0], inputs) and torch.equal(again[1], targets)  # a seed repeats the masks


def test_the_loss_counts_the_masked_positions_only():
    task = get_task("language_model")
    torch.manual_seed(0)
    logits = torch.randn(2, 8, 30)
    targets = torch.full((2, 8), text.IGNORE)
    targets[0, 3], targets[1, 5] = 7, 11
    loss, _ = task.loss(None, logits, targets)
    by_hand = -(logits[0, 3].log_softmax(-1)[7] + logits[1, 5].log_softmax(-1)[11]) / 2
    assert torch.allclose(loss, by_hand)
    other = logits.clone()
    other[0, 0] += 100  # an unmasked position's scores do not move the loss
    assert torch.allclose(task.loss(None, other, targets)[0], loss)
    sums = task.score(logits, targets)
    assert int(sums["count"]) == 2
    assert math.isclose(task.metrics(sums)["bits"], loss.item() / math.log(2), rel_tol=1e-5)


def test_the_masked_positions_alone_give_the_full_logits_figures():
    """BERT's sparse prediction: the head at the masked positions only gives those positions'
    logits of the full forward, and the masked task's loss and scores equal the dense task's."""
    torch.manual_seed(0)
    model = get_model("bert", vocab_size=30, hidden_dim=16, num_layers=1, num_heads=2, mlp_dim=32,
                      max_len=8, dropout=0.0).eval()
    task, dense = get_task("masked_language_model"), get_task("language_model")
    x, y = task.random_batch(3, (8,), 30)
    masked = y != text.IGNORE
    with torch.no_grad():
        full, sparse = model(x), task.forward(model, x, y)
    assert sparse.shape == (int(masked.sum()), 30)
    assert torch.allclose(sparse, full[masked], atol=1e-6)
    assert torch.allclose(task.loss(model, sparse, y)[0], dense.loss(model, full, y)[0], atol=1e-6)
    s, d = task.metrics(task.score(sparse, y)), dense.metrics(dense.score(full, y))
    assert s["acc"] == d["acc"] and s["bits"] == pytest.approx(d["bits"], rel=1e-6)
    with pytest.raises(ValueError, match="True or False for every token, shape"):
        model(x, masked_positions=masked[:, :4])
    gpt = get_model("gpt2", vocab_size=30, block_size=8, num_layers=1, num_heads=2, hidden_dim=16)
    with pytest.raises(ValueError, match="must take masked_positions="):
        task.forward(gpt, x, y)


# ---------------------------------------------------------------------------------------------
# Sampling


def test_sampling_temperature_and_top_k():
    logits = torch.tensor([[1.0, 3.0, 2.0, -1.0]])
    assert gpt.sample_next(logits, temperature=0).item() == 1  # greedy
    g = torch.Generator().manual_seed(0)
    draws = torch.cat([gpt.sample_next(logits, 1.0, top_k=2, generator=g) for _ in range(300)]).flatten()
    assert set(draws.tolist()) == {1, 2}  # only the two best
    assert abs((draws == 1).float().mean().item() - 1 / (1 + math.exp(-1))) < 0.08  # e^3 / (e^3 + e^2)
    cold = torch.cat([gpt.sample_next(logits, 0.05, generator=g) for _ in range(50)]).flatten()
    assert (cold == 1).all()  # a low temperature is almost greedy
    model = get_model("gpt2", vocab_size=20, block_size=8, num_layers=1, num_heads=2, hidden_dim=16)
    out = model.generate(torch.zeros(2, 3, dtype=torch.long), 12, top_k=5, generator=g)
    assert out.shape == (2, 15) and torch.equal(out[:, :3], torch.zeros(2, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="has positions for 8 tokens"):
        model(torch.zeros(1, 9, dtype=torch.long))


# ---------------------------------------------------------------------------------------------
# The corpus


def _fake_bible(folder, body: bytes):
    """A stand-in for Debian's bible program that prints ``body``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "payload").write_bytes(body)
    prog = folder / "bible"
    prog.write_text(f"#!/bin/sh\ncat '{folder / 'payload'}'\n")
    prog.chmod(prog.stat().st_mode | stat.S_IEXEC)
    return prog


SMALL_BIBLE = (b"Ge1:1 In the beginning God created the heaven and the earth.\n"
               b"Ge1:2 And the earth was without form, and void.\n"
               b"Psa119:1 Blessed are the undefiled in the way.\n"
               b"1Jn1:1 That which was from the beginning.\n")


def test_the_corpus_is_read_once_checked_and_cached(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_BOOK_CACHE", str(tmp_path / "cache"))
    prog = _fake_bible(tmp_path / "bin", SMALL_BIBLE)
    digest = text._sha256_bytes(SMALL_BIBLE)
    got = text.kjv_text(command=(str(prog),), sha256=digest)
    verses = text.parse_verses(got)
    assert [(v.book, v.chapter, v.verse) for v in verses] == [("Genesis", 1, 1), ("Genesis", 1, 2),
                                                               ("Psalms", 119, 1), ("1 John", 1, 1)]
    assert verses[2].section == "wisdom" and verses[3].section == "letters"
    prog.unlink()  # from the cache now, without the program
    assert text.kjv_text(command=(str(prog),), sha256=digest) == got
    with pytest.raises(DataError, match="SHA-256"):  # other bytes than the book was made with
        (tmp_path / "cache" / "kjv" / "kjv.txt").unlink()
        text.kjv_text(command=(str(_fake_bible(tmp_path / "bin2", SMALL_BIBLE + b"x")),), sha256=digest)


def test_without_the_package_the_message_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setenv("CNN_BOOK_CACHE", str(tmp_path / "cache"))
    with pytest.raises(DataError, match=r"sudo apt-get install bible-kjv"):
        text.kjv_text(command=("no-such-bible-program",))


def test_the_split_holds_out_the_end_of_every_book():
    verses = [text.Verse(b, 1, i, f"{b} {i}") for b in ("Genesis", "Ruth", "Jude") for i in range(1, 21)]
    train_v, val_v = text.split_verses(verses)
    assert [v.verse for v in val_v] == [19, 20] * 3 and len(train_v) == 54
    assert {v.book for v in val_v} == {"Genesis", "Ruth", "Jude"}


needs_kjv = pytest.mark.skipif(not (text._kjv_file().exists() or __import__("shutil").which("bible")),
                               reason="Debian's bible-kjv (apt install bible-kjv)")


@needs_kjv
def test_the_real_corpus_gives_the_recipes_sizes():
    verses = text.kjv_verses()
    train_v, val_v = text.split_verses(verses)
    assert len(train_v) == recipes.DATASETS["kjv_sections"][2]
    join = lambda vs: "\n".join(v.text for v in vs) + "\n"  # noqa: E731
    chars = text.CharTokenizer(join(train_v) + join(val_v))
    assert chars.vocab_size == recipes.DATASETS["kjv_chars"][1] == recipes.get("gpt_char", "cpu").options["vocab_size"]
    data = text.causal_lm_data(chars.encode(join(train_v)), chars.encode(join(val_v)), 64, chars.vocab_size)
    assert len(data.train_x) == recipes.DATASETS["kjv_chars"][2]
    assert torch.equal(data.train_x[0, 1:], data.train_y[0, :-1])  # the target is the next character
    assert set(text.SECTIONS) == {v.section for v in verses}


# ---------------------------------------------------------------------------------------------
# Through fit


def test_the_language_model_tasks_train_through_fit(monkeypatch):
    monkeypatch.setenv("CNN_BOOK_QUICK", "0")
    torch.manual_seed(0)
    stream = torch.arange(4000) % 7  # a pattern a model learns at once: 0 1 2 ... 6 0 1 ...
    data = text.causal_lm_data(stream[:3200], stream[3200:], 16, 7, name="cycle")
    model = get_model("gpt2", vocab_size=7, block_size=16, num_layers=1, num_heads=2, hidden_dim=16)
    hist = train.fit(model, data, epochs=3, batch_size=16, lr=1e-2, progress=False, device="cpu")
    assert hist.task == "language_model" and hist["test_acc"][-1] > 0.95 and hist["test_bits"][-1] < 0.5
    masking = text.Masking(mask_id=4, vocab_size=12, special_ids=(0, 1, 2, 3, 4))
    blocks = text.pack([list(range(5, 12))] * 200, 16, cls_id=2, sep_id=3)  # 100 blocks
    data = text.masked_lm_data(blocks[:60], blocks[60:], masking)
    model = get_model("bert", vocab_size=12, hidden_dim=32, num_layers=1, num_heads=2, mlp_dim=64, max_len=16)
    hist = train.fit(model, data, epochs=3, batch_size=8, lr=3e-3, progress=False, device="cpu")
    assert hist.task == "masked_language_model"
    assert hist["test_acc"][-1] > hist["test_acc"][0] or hist["test_acc"][-1] > 0.5
    ids, _ = text.pad_batch([[2, 5, 3], [2, 9, 9, 3], [2, 5, 5, 5, 5, 5, 3]], 5, pad_id=0)
    assert ids.tolist() == [[2, 5, 3, 0, 0], [2, 9, 9, 3, 0], [2, 5, 5, 5, 3]]
    x = torch.tensor([[2, 5, 6, 3, 0, 0]] * 40 + [[2, 9, 10, 3, 0, 0]] * 40)
    y = [0] * 40 + [1] * 40
    data = text.classification_data(x[::2], y[::2], x[1::2], y[1::2], ["a", "b"], 12, pad_id=0)
    bow = get_model("bag_of_words", num_classes=2, vocab_size=12, max_len=6)
    hist = train.fit(bow, data, epochs=5, batch_size=8, lr=0.1, progress=False, device="cpu")
    assert hist["test_acc"][-1] == 1.0
    fig = plot.confusion_matrix(bow, data)  # counts verses, not images
    assert fig.axes[1].get_ylabel() == "sequences" and "100.0% of 40 correct" in fig.axes[0].get_title()


def test_a_language_model_on_the_wrong_vocabulary_is_told_before_training():
    data = text.causal_lm_data(torch.arange(200) % 7, torch.arange(100) % 7, 8, 7)
    model = get_model("gpt2", vocab_size=9, block_size=8, num_layers=1, num_heads=2, hidden_dim=16)
    with pytest.raises(ValueError, match="build the model with vocab_size=7"):
        train.fit(model, data, epochs=1, progress=False, device="cpu")
    with pytest.raises(ValueError, match="augment=True is for images"):
        train.fit(get_model("gpt2", vocab_size=7, block_size=8, num_layers=1, num_heads=2, hidden_dim=16), data,
                  epochs=1, augment=True, progress=False, device="cpu")


def test_the_wordpiece_vocabulary_is_trained_here():
    tok = text.train_wordpiece(["In the beginning God created the heaven and the earth."] * 50, vocab_size=60)
    assert [tok.id_to_token(i) for i in range(5)] == text.SPECIAL_TOKENS
    enc = tok.encode("the earth", "the heaven")
    assert enc.tokens[0] == "[CLS]" and enc.tokens.count("[SEP]") == 2
    first = enc.tokens.index("[SEP]") + 1  # [CLS] A [SEP]: segment 0; B [SEP]: segment 1
    assert enc.type_ids == [0] * first + [1] * (len(enc.tokens) - first)


def test_the_wordpiece_vocabulary_is_the_same_in_every_run():
    # tokenizers' own trainer numbers the "##" pieces in hash-map order (its issue #1794): on this
    # corpus it gave 30 different id maps in 30 runs; train_wordpiece must give one
    corpus = ["In the beginning God created the heaven and the earth.",
              "And the earth was without form, and void; and darkness was upon the face of the deep."] * 20
    vocabs = {tuple(sorted(text.train_wordpiece(corpus, vocab_size=70).get_vocab().items())) for _ in range(30)}
    assert len(vocabs) == 1
    tok = text.train_wordpiece(corpus, vocab_size=70)
    assert tok.get_vocab_size() == 70
    # the "##" pieces handed to the trainer are ordinary pieces, not special tokens
    assert sorted(t.content for t in tok.get_added_tokens_decoder().values()) == sorted(text.SPECIAL_TOKENS)
    enc = tok.encode("darkness upon the deep", add_special_tokens=False)
    assert tok.decode(enc.ids) == "darkness upon the deep"
    assert all(i >= 5 for i in enc.ids)  # no [UNK]: every letter has its pieces


@pytest.mark.parametrize("sampling", [{"temperature": 0}, {"temperature": 1.0, "top_k": 10}, {"temperature": 0.8}])
def test_generate_with_the_kv_cache_gives_the_same_tokens(sampling):
    """The cache changes the cost, not the text: greedy and seeded sampling give the same tokens
    with and without it, through the window's end (block_size 16, 40 tokens: the window slides)."""
    from cnn_book.models.gpt import GPT

    torch.manual_seed(0)
    model = GPT(vocab_size=50, block_size=16, num_layers=2, num_heads=2, hidden_dim=32)
    prompt = torch.randint(0, 50, (3, 4))
    runs = [model.generate(prompt, 40, generator=torch.Generator().manual_seed(7), use_cache=cache, **sampling)
            for cache in (True, False)]
    assert runs[0].shape == (3, 44) and torch.equal(runs[0], runs[1])


def test_the_kv_cache_gives_the_full_forward_s_logits_token_by_token():
    from cnn_book.models.gpt import GPT
    from cnn_book.models.transformer import KVCache

    torch.manual_seed(0)
    model = GPT(vocab_size=50, block_size=16, num_layers=3, num_heads=4, hidden_dim=32).eval()
    idx = torch.randint(0, 50, (2, 12))
    full = model(idx)
    cache = KVCache(3)
    steps = [model(idx[:, :5], kv_cache=cache)]  # a prompt of 5, then one token at a time
    steps += [model(idx[:, t:t + 1], kv_cache=cache) for t in range(5, 12)]
    assert cache.length == 12 and cache.layers[0]["k"].shape == (2, 4, 12, 8)
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="positions for 16 tokens"):
        model(torch.zeros(2, 5, dtype=torch.long), kv_cache=cache)  # 12 + 5 > block_size


def test_a_byte_level_bpe_round_trips_any_text_and_shortens_it():
    texts = ["In the beginning God created the heaven and the earth.",
             "And the earth was without form, and void; and darkness was upon the face of the deep."] * 20
    bpe = text.train_byte_bpe(texts, vocab_size=300)
    again = text.train_byte_bpe(texts, vocab_size=300)
    assert bpe.get_vocab() == again.get_vocab()  # the same texts, the same vocabulary
    assert 256 < bpe.get_vocab_size() <= 300
    for s in (texts[1], "Zebra ümlaut 日本 \\n\\t!", ""):  # unseen characters: bytes, never unknown
        ids = bpe.encode(s).ids
        assert bpe.decode(ids) == s and all(0 <= i < bpe.get_vocab_size() for i in ids)
    assert len(bpe.encode(texts[1]).ids) < len(texts[1]) / 2  # merges: fewer tokens than characters
    with pytest.raises(ValueError, match="vocab_size >= 257"):
        text.train_byte_bpe(texts, vocab_size=100)


def test_a_label_budget_of_verses_and_its_figure_with_seeds():
    """Chapter 15's sweep: transfer.per_class draws n verses of each part (nested over n, repeated
    to a fixed number of steps), and accuracy_by_labels draws each method's mean over seeds with
    a bar from its lowest to its highest run."""
    from cnn_book import transfer

    x = torch.arange(60 * 4).view(60, 4)
    y = [i % 3 for i in range(60)]
    data = text.classification_data(x, y, x[:6], y[:6], ["a", "b", "c"], 300, pad_id=0)
    two, five = (transfer.per_class(data, n, seed=1) for n in (2, 5))
    assert two.train_y.tolist() == [0, 1, 2, 0, 1, 2] and len(five.train_x) == 15
    assert set(map(tuple, two.train_x.tolist())) <= set(map(tuple, five.train_x.tolist()))  # nested
    tiled = transfer.per_class(data, 2, seed=1, repeat_to=20)
    assert len(tiled.train_x) == 20 and torch.equal(tiled.train_x[6:12], two.train_x)
    assert torch.equal(tiled.test_x, data.test_x)
    fig = plot.accuracy_by_labels({10: {"m": [0.2, 0.3, 0.4]}, 100: {"m": [0.5, 0.5, 0.8]}}, unit="verses",
                                  ticks={100: "all (100)"})
    ax = fig.axes[0]
    assert ax.lines[0].get_ydata().tolist() == pytest.approx([30.0, 60.0])  # the means
    bars = ax.collections[0].get_segments()  # from the lowest run to the highest
    assert [tuple(s[:, 1].round(6)) for s in bars] == [(20.0, 40.0), (50.0, 80.0)]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["10", "all (100)"]
    assert ax.get_xlabel() == "labelled training verses per class"
