"""The byte-level BPE tokenizer of the embedded model: trained on the same number of characters
of every language, ``<s>``/``</s>``/``<pad>`` inside the vocabulary, NFC normalisation, and (by
default) no token spanning two Han/kana characters; and the UTF-8 bytes each token stands for
(for bits per byte)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from jaxtyping import Int64
from torch import Tensor

from lapelens.errors import LapelensError

SPECIAL_TOKENS = ("<s>", "</s>", "<pad>")

#: One Han or kana character (CJK Unified Ideographs with extension A, compatibility ideographs,
#: hiragana and katakana): with ``cjk_characters`` each is a pre-token of its own.
CJK_CHARACTER = r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"


def train_tokenizer(
    texts_by_language: Mapping[str, Sequence[str]],
    vocab_size: int,
    chars_per_language: int,
    cjk_characters: bool = False,
) -> Any:
    """Byte-level BPE on an equal number of characters per language (whole documents, in order).

    With ``cjk_characters`` no merge crosses a Han/kana character boundary: a Chinese or Japanese
    token is one character, or a byte piece of a rare one.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    sample: list[str] = []
    for lang, docs in texts_by_language.items():
        taken = 0
        for doc in docs:
            if taken >= chars_per_language:
                break
            sample.append(doc)
            taken += len(doc)
        if taken == 0:
            raise LapelensError(f"No training text for {lang!r}: the tokenizer needs text in every language.")
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(CJK_CHARACTER), behavior="isolated"), byte_level])
        if cjk_characters
        else byte_level
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(sample, trainer)
    bos, eos, pad = SPECIAL_TOKENS
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=bos, eos_token=eos, pad_token=pad, add_bos_token=False
    )


def token_byte_lengths(tokenizer: Any) -> Int64[Tensor, " vocab"]:
    """UTF-8 bytes each token id stands for in a byte-level BPE vocabulary (0 for special tokens)."""
    from tokenizers.pre_tokenizers import ByteLevel

    alphabet = set(ByteLevel.alphabet())
    special = set(tokenizer.all_special_ids)
    lengths = torch.zeros(len(tokenizer), dtype=torch.long)
    for tid, piece in enumerate(tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))):
        if tid in special:
            continue
        if piece is None or not set(piece) <= alphabet:
            raise LapelensError(
                f"Token {tid} ({piece!r}) is not a byte-level BPE piece: bits per byte need a "
                "byte-level tokenizer such as the one `lapelens train` makes."
            )
        lengths[tid] = len(piece)
    return lengths
