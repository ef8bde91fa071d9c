"""Text for the language-model chapters: the King James Bible, its tokenisers, and token tensors for ``fit``.

The corpus: the King James Version of the Bible (1611), as Debian's ``bible-kjv`` packages it
(the ``bible`` program and its ``bible-kjv-text`` data; install with
``sudo apt-get install bible-kjv``). The text is out of copyright (Debian's copyright file:
"The copyright for the King James Version text of the Bible is expired"; in the United Kingdom the
Crown's letters patent still govern printing, which this book does not do), 31,102 verses, 4.4 MB:
real English, large enough to learn from on a CPU and small enough to read through in minutes.
Why not the alternatives the issue lists: Debian's ``fortunes`` mixes quotations whose authors
still hold their copyright (and some that a classroom would not want a model to learn to write);
PyPI's ``names`` is a list of names, not sentences.

``kjv_verses()`` runs ``bible -f Gen1:1-Rev22:21`` once, checks the SHA-256 of what it prints and
keeps it in the cache (``files.cache_dir()``); after that the program is not needed. Each verse
carries its book, chapter and number; ``SECTIONS`` groups the 66 books into six parts of the
canon, the labels of the classification task. ``split_verses`` holds out the last tenth of every
book (by position, not at random: neighbouring verses are too alike for a random split to be
an honest test).

``CharTokenizer`` maps characters to ids (the first GPT); ``train_wordpiece`` trains a WordPiece
vocabulary with the ``tokenizers`` library on the training verses only (BERT). ``TokenData`` holds
token-id tensors with the interface ``train.fit`` reads (``batches``, ``split``, ``task``), for
the three kinds of work: the next token (``causal_lm_data``), masked tokens (``masked_lm_data``,
masked afresh for every training batch by ``mask_tokens``) and a label per text
(``classification_data``).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import ClassVar

import torch
from torch import Tensor

from .data.images import batch_indices
from .files import DataError, atomic_write, cache_dir

# What ``bible -f Gen1:1-Rev22:21`` prints with Debian's bible-kjv 4.38: one verse per line, "Ge1:1 In the ..."
KJV_COMMAND = ("bible", "-f", "Gen1:1-Rev22:21")
KJV_SHA256 = "cd45f0c9cedab8e4439bd6486c8952c77cc8b0ecc5d1f6ae3513f2039f47229d"
KJV_VERSES = 31_102

# The 66 books in order: (the abbreviation the bible program prints, the name)
BOOKS = [
    ("Ge", "Genesis"), ("Exo", "Exodus"), ("Lev", "Leviticus"), ("Num", "Numbers"), ("Deu", "Deuteronomy"),
    ("Josh", "Joshua"), ("Jdgs", "Judges"), ("Ruth", "Ruth"), ("1Sm", "1 Samuel"), ("2Sm", "2 Samuel"),
    ("1Ki", "1 Kings"), ("2Ki", "2 Kings"), ("1Chr", "1 Chronicles"), ("2Chr", "2 Chronicles"), ("Ezra", "Ezra"),
    ("Neh", "Nehemiah"), ("Est", "Esther"), ("Job", "Job"), ("Psa", "Psalms"), ("Prv", "Proverbs"),
    ("Eccl", "Ecclesiastes"), ("SSol", "Song of Solomon"), ("Isa", "Isaiah"), ("Jer", "Jeremiah"),
    ("Lam", "Lamentations"), ("Eze", "Ezekiel"), ("Dan", "Daniel"), ("Hos", "Hosea"), ("Joel", "Joel"),
    ("Amos", "Amos"), ("Obad", "Obadiah"), ("Jonah", "Jonah"), ("Mic", "Micah"), ("Nahum", "Nahum"),
    ("Hab", "Habakkuk"), ("Zep", "Zephaniah"), ("Hag", "Haggai"), ("Zec", "Zechariah"), ("Mal", "Malachi"),
    ("Mat", "Matthew"), ("Mark", "Mark"), ("Luke", "Luke"), ("John", "John"), ("Acts", "Acts"), ("Rom", "Romans"),
    ("1Cor", "1 Corinthians"), ("2Cor", "2 Corinthians"), ("Gal", "Galatians"), ("Eph", "Ephesians"),
    ("Phi", "Philippians"), ("Col", "Colossians"), ("1Th", "1 Thessalonians"), ("2Th", "2 Thessalonians"),
    ("1Tim", "1 Timothy"), ("2Tim", "2 Timothy"), ("Titus", "Titus"), ("Phmn", "Philemon"), ("Heb", "Hebrews"),
    ("Jas", "James"), ("1Pet", "1 Peter"), ("2Pet", "2 Peter"), ("1Jn", "1 John"), ("2Jn", "2 John"),
    ("3Jn", "3 John"), ("Jude", "Jude"), ("Rev", "Revelation"),
]
# Six parts of the canon, each a run of books (first, last): the labels of the classification task
SECTIONS = {"law": ("Genesis", "Deuteronomy"), "history": ("Joshua", "Esther"), "wisdom": ("Job", "Song of Solomon"),
            "prophets": ("Isaiah", "Malachi"), "gospels and acts": ("Matthew", "Acts"),
            "letters": ("Romans", "Revelation")}


@dataclass(frozen=True)
class Verse:
    book: str
    chapter: int
    verse: int
    text: str

    @property
    def section(self) -> str:
        """The part of the canon (``SECTIONS``) the verse's book belongs to."""
        return section_of(self.book)


def section_of(book: str) -> str:
    names = [n for _, n in BOOKS]
    i = names.index(book)
    for section, (first, last) in SECTIONS.items():
        if names.index(first) <= i <= names.index(last):
            return section
    raise ValueError(f"{book} is in no section")


def _kjv_file() -> Path:
    return cache_dir() / "kjv" / "kjv.txt"


def _sha256_bytes(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def kjv_text(command: Sequence[str] = KJV_COMMAND, sha256: str = KJV_SHA256) -> str:
    """The verified text as ``bible -f`` prints it, one verse per line, from the cache or (once) the
    program. A missing program, a failed run or other bytes raise ``DataError`` saying what to do."""
    path = _kjv_file()
    try:
        data = path.read_bytes()
        if _sha256_bytes(data) == sha256:
            return data.decode("utf-8")
        path.unlink(missing_ok=True)  # a damaged or foreign file: made again below
    except FileNotFoundError:  # not there yet (or another process dropped a damaged one a moment ago)
        pass
    if shutil.which(command[0]) is None:
        raise DataError(f"The King James Bible comes from Debian's package bible-kjv, whose program {command[0]!r} "
                        f"is not installed (and {path} does not hold the text yet). Install it with\n"
                        "  sudo apt-get install bible-kjv\n(on Colab: !apt-get install -y bible-kjv), then run "
                        "this again: the text is read once and kept in the cache.")
    env = {**os.environ, "COLUMNS": "1000"}  # -f formats one verse per line; no wrapping
    run = subprocess.run(list(command), capture_output=True, env=env, check=False, timeout=300)
    if run.returncode != 0:
        raise DataError(f"{' '.join(command)} failed (exit {run.returncode}): {run.stderr.decode()[:300]}")
    got = _sha256_bytes(run.stdout)
    if got != sha256:
        raise DataError(f"{' '.join(command)} printed {len(run.stdout):,} bytes with SHA-256 {got}, not the text "
                        f"the book was made with ({sha256}): another version of bible-kjv-text? Reinstall it with "
                        "sudo apt-get install --reinstall bible-kjv-text")
    with atomic_write(path) as f:  # a name of its own: several processes may fill the cache at once (torchrun)
        f.write(run.stdout)
    return run.stdout.decode("utf-8")


def parse_verses(text: str) -> list[Verse]:
    """Lines "Ge1:1 In the beginning ..." -> ``Verse("Genesis", 1, 1, "In the beginning ...")``."""
    names = dict(BOOKS)
    verses = []
    for line in text.splitlines():
        if not line.strip():
            continue
        ref, _, body = line.partition(" ")
        m = re.fullmatch(r"(\d?[A-Za-z]+)(\d+):(\d+)", ref)
        if m is None or m.group(1) not in names:
            raise DataError(f"a line of the Bible's text starts with {ref!r}, which names no verse: {line[:60]!r}")
        verses.append(Verse(names[m.group(1)], int(m.group(2)), int(m.group(3)), body.strip()))
    return verses


def kjv_verses() -> list[Verse]:
    """The 31,102 verses of the King James Bible, in order."""
    verses = parse_verses(kjv_text())
    if len(verses) != KJV_VERSES:
        raise DataError(f"read {len(verses):,} verses, expected {KJV_VERSES:,}")
    return verses


def split_verses(verses: Sequence[Verse], held_out: float = 0.1) -> tuple[list[Verse], list[Verse]]:
    """(training, validation): the last ``held_out`` of every book's verses (at least one) is held
    out; the order is kept. Every book and section is in both, and no held-out verse sits among
    training verses, so what is tested is text the model has not seen the neighbours of."""
    by_book: dict[str, list[Verse]] = {}
    for v in verses:
        by_book.setdefault(v.book, []).append(v)
    train, val = [], []
    for vs in by_book.values():
        k = max(1, math.ceil(len(vs) * held_out))
        train += vs[:-k]
        val += vs[-k:]
    return train, val


# ---------------------------------------------------------------------------------------------
# Tokenisers
# ---------------------------------------------------------------------------------------------


class CharTokenizer:
    """Characters to ids and back; the vocabulary is the sorted characters of the text it is built
    from. ``encode`` refuses a character it has not seen, naming it."""

    def __init__(self, text: str) -> None:
        self.chars = sorted(set(text))
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError as e:
            raise ValueError(f"the character {e.args[0]!r} is not in the vocabulary of {self.vocab_size}") from None

    def decode(self, ids: Iterable[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)


SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]  # ids 0 to 4, BERT's names


def train_wordpiece(texts: Iterable[str], vocab_size: int = 4096, lowercase: bool = True):
    """A BERT-style WordPiece tokenizer trained on ``texts`` with the ``tokenizers`` library: BERT's
    normaliser (lower case) and pre-tokeniser (words and punctuation), ``SPECIAL_TOKENS`` first
    (ids 0-4), continuation pieces marked "##", and the [CLS] A [SEP] (B [SEP]) layout with segment
    ids 0 for A and 1 for B. Nothing is downloaded.

    The same texts give the same vocabulary and the same ids in every run. The library's trainer
    alone does not (huggingface/tokenizers issue #1794, measured here: 1 run in 6 gave another
    vocabulary on the book's verses, and every run other ids): it creates the "##c" piece of each
    character in hash-map order, and those ids break ties between equally frequent merges. So the
    "##c" pieces are handed to the trainer first, in sorted order, and the trained vocabulary is
    then put into a fresh tokenizer whose only special tokens are ``SPECIAL_TOKENS``."""
    try:
        from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    except ImportError as e:
        raise ImportError("training a WordPiece vocabulary needs the tokenizers library: pip install tokenizers") from e

    def pipeline(model):
        tok = Tokenizer(model)
        tok.normalizer = normalizers.BertNormalizer(lowercase=lowercase)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        return tok

    texts = list(texts)
    tok = pipeline(models.WordPiece(unk_token="[UNK]"))
    # every character that the trainer will see after the first of a word: the "##c" pieces it needs
    inner = sorted({c for t in texts for word, _ in tok.pre_tokenizer.pre_tokenize_str(tok.normalizer.normalize_str(t))
                    for c in word[1:]})
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, show_progress=False,
                                        special_tokens=SPECIAL_TOKENS + [f"##{c}" for c in inner])
    tok.train_from_iterator(texts, trainer)
    tok = pipeline(models.WordPiece(tok.get_vocab(), unk_token="[UNK]"))
    tok.add_special_tokens(SPECIAL_TOKENS)  # already ids 0-4; "##c" pieces stay ordinary pieces
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
                                                       special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return tok


def train_byte_bpe(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer as GPT-2's (Radford et al., 2019, section 2.2), trained on
    ``texts`` with the ``tokenizers`` library: the 256 bytes are the first tokens, so any text can
    be encoded (nothing is unknown), and merges of frequent pairs make the rest, up to
    ``vocab_size``. Words are split before merging (GPT-2's pre-tokeniser: a space belongs to the
    word after it), and ``decode(encode(text)) == text``. GPT-2's own vocabulary is 50,257 tokens."""
    try:
        from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    except ImportError as e:
        raise ImportError("training a BPE vocabulary needs the tokenizers library: pip install tokenizers") from e
    if vocab_size < 257:
        raise ValueError(f"a byte-level BPE holds the 256 bytes and at least one merge: vocab_size >= 257, "
                         f"got {vocab_size}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(list(texts), trainer)
    return tok


# ---------------------------------------------------------------------------------------------
# Token tensors for fit
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Masking:
    """BERT's masking rule (section 3.1): ``rate`` of the tokens are chosen (never a special one);
    of those, 80 % become [MASK], 10 % a random token, 10 % stay as they are. Only chosen
    positions have a target; the rest are marked -100, which the loss ignores."""

    mask_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    rate: float = 0.15


IGNORE = -100  # the target of a position the loss skips (F.cross_entropy's ignore_index)


def mask_tokens(ids: Tensor, masking: Masking, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """(inputs, targets) for masked-language modelling from token ids (N, T), by ``masking``'s rule.
    Random numbers come from ``generator`` (on the CPU), so a seed repeats the masks."""
    shape = ids.shape
    special = torch.zeros(shape, dtype=torch.bool)
    cpu = ids.cpu()
    for s in masking.special_ids:
        special |= cpu == s
    chosen = (torch.rand(shape, generator=generator) < masking.rate) & ~special
    how = torch.rand(shape, generator=generator)  # < 0.8: [MASK]; 0.8-0.9: a random token; >= 0.9: unchanged
    normal = torch.tensor([i for i in range(masking.vocab_size) if i not in masking.special_ids])
    random_tokens = normal[torch.randint(len(normal), shape, generator=generator)]
    inputs = cpu.clone()
    inputs[chosen & (how < 0.8)] = masking.mask_id
    swap = chosen & (how >= 0.8) & (how < 0.9)
    inputs[swap] = random_tokens[swap]
    targets = torch.where(chosen, cpu, torch.full_like(cpu, IGNORE))
    return inputs.to(ids.device), targets.to(ids.device)


@dataclass
class TokenData:
    """Token-id sequences (N, T) and their targets as tensors on a device, with the interface
    ``train.fit`` reads from ``ImageData``: ``task``, ``batches``, ``split``, ``input_shape``.

    - next-token prediction: targets (N, T) are the inputs shifted by one (``causal_lm_data``);
    - masked tokens: the training inputs are masked afresh in every batch by ``masking`` (the test
      split is masked once, with a fixed seed, so its figures compare across epochs and runs);
    - classification: targets (N,) are labels, ``classes`` their names."""

    unit: ClassVar[str] = "sequences"
    # quick mode (CNN_BOOK_QUICK=1) trains and tests on this many sequences: each holds up to T examples (tokens)
    quick_limit: ClassVar[int] = 512
    name: str
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    vocab_size: int
    task: str = "language_model"
    classes: list[str] = field(default_factory=list)
    masking: Masking | None = None
    pad_id: int | None = None

    @property
    def device(self) -> torch.device:
        return self.train_x.device

    @property
    def input_shape(self) -> tuple[int]:
        return (self.train_x.shape[1],)

    def to(self, device: torch.device | str) -> TokenData:
        return replace(self, train_x=self.train_x.to(device), train_y=self.train_y.to(device),
                       test_x=self.test_x.to(device), test_y=self.test_y.to(device))

    def split(self, split: str) -> tuple[Tensor, Tensor]:
        if split not in ("train", "test"):
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        return (self.train_x, self.train_y) if split == "train" else (self.test_x, self.test_y)

    def batches(self, split: str, batch_size: int, *, shuffle: bool = False, augment: bool = False,
                limit: int | None = None, generator: torch.Generator | None = None, merge_single: bool = False):
        """Yield ``(token ids, targets)``; training batches of a masked set are masked here."""
        if augment:
            raise ValueError("augment=True is for images; text is not flipped or shifted")
        x, y = self.split(split)
        for idx in batch_indices(len(x), batch_size, shuffle, limit, generator, merge_single, x.device):
            if self.masking is not None and split == "train":
                yield mask_tokens(x.index_select(0, idx), self.masking, generator)
            else:
                yield x.index_select(0, idx), y.index_select(0, idx)

    def describe(self, n_train: int, n_test: int) -> str:
        return f"{n_train:,} train / {n_test:,} test sequences of {self.input_shape[0]} tokens"

    def rate(self, per_second: float) -> str:
        """'120 train sequences/s (7,680 tokens/s)': a sequence holds T tokens."""
        return f"{per_second:,.0f} train {self.unit}/s ({per_second * self.input_shape[0]:,.0f} tokens/s)"


def causal_lm_data(train_ids: Sequence[int] | Tensor, test_ids: Sequence[int] | Tensor, block_size: int,
                   vocab_size: int, name: str = "text") -> TokenData:
    """Next-token data: each token stream cut into non-overlapping windows of ``block_size``;
    the target of position t is the token at t + 1, so every window holds ``block_size``
    training examples (each position predicts the next, seeing only those before it)."""

    def windows(ids) -> tuple[Tensor, Tensor]:
        ids = torch.as_tensor(ids, dtype=torch.long)
        n = (len(ids) - 1) // block_size
        if n < 1:
            raise ValueError(f"{len(ids)} tokens make no window of {block_size} tokens and its next token")
        return ids[: n * block_size].view(n, block_size), ids[1 : n * block_size + 1].view(n, block_size)

    (tx, ty), (vx, vy) = windows(train_ids), windows(test_ids)
    return TokenData(name, tx, ty, vx, vy, vocab_size)


def reversal_data(n_train: int = 20_000, n_test: int = 2_000, length: int = 10, symbols: int = 10,
                  seed: int = 0) -> TokenData:
    """A sequence-to-sequence task a CPU learns in minutes (the Annotated Transformer's copy task,
    turned round so that the alignment is an anti-diagonal): the source is ``length`` random
    symbols 0 .. ``symbols`` - 1, the target the same symbols in reverse order. Each row of x holds
    the source, then the decoder's input: a start token (id ``symbols``) and the target without its
    last token (teacher forcing); y is the target. ``vocab_size`` = ``symbols`` + 1."""
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(0, symbols, (n_train + n_test, length), generator=g)
    tgt = src.flip(1)
    start = torch.full((len(src), 1), symbols)
    x = torch.cat([src, start, tgt[:, :-1]], 1)  # (N, 2 * length)
    return TokenData("reversal", x[:n_train], tgt[:n_train], x[n_train:], tgt[n_train:], symbols + 1)


def pack(sequences: Iterable[Sequence[int]], length: int, cls_id: int, sep_id: int) -> Tensor:
    """The token ids of consecutive ``sequences`` joined into one stream and cut into blocks of
    [CLS] + ``length`` - 2 tokens + [SEP] (RoBERTa's packing: no padding, every position a token)."""
    stream = [t for s in sequences for t in s]
    body = length - 2
    n = len(stream) // body
    blocks = torch.tensor(stream[: n * body], dtype=torch.long).view(n, body)
    return torch.cat([torch.full((n, 1), cls_id), blocks, torch.full((n, 1), sep_id)], dim=1)


def masked_lm_data(train_blocks: Tensor, test_blocks: Tensor, masking: Masking, name: str = "text",
                   seed: int = 0) -> TokenData:
    """Masked-token data from blocks of token ids: training blocks masked in every batch, the test
    blocks once with ``seed``."""
    test_x, test_y = mask_tokens(test_blocks, masking, torch.Generator().manual_seed(seed))
    return TokenData(name, train_blocks, train_blocks, test_x, test_y, masking.vocab_size,
                     task="masked_language_model", masking=masking)


def pad_batch(sequences: Sequence[Sequence[int]], length: int, pad_id: int) -> tuple[Tensor, int]:
    """(N, ``length``) ids, each sequence cut to ``length`` (its last id kept: [SEP]) or padded;
    and how many were cut."""
    out = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    cut = 0
    for i, s in enumerate(sequences):
        if len(s) > length:
            s, cut = [*s[: length - 1], s[-1]], cut + 1
        out[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return out, cut


def classification_data(train_ids: Tensor, train_labels: Sequence[int], test_ids: Tensor,
                        test_labels: Sequence[int], classes: list[str], vocab_size: int, pad_id: int,
                        name: str = "text") -> TokenData:
    """A label per sequence (padded ids, ``pad_batch``): the classification task's data."""
    return TokenData(name, train_ids, torch.as_tensor(train_labels, dtype=torch.long), test_ids,
                     torch.as_tensor(test_labels, dtype=torch.long), vocab_size, task="classification",
                     classes=list(classes), pad_id=pad_id)
