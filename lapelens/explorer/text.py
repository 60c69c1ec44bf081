"""How the explorer writes tokens and numbers: text, byte pieces merged into whole characters, and
compact strings for long arrays of integers and floats (the page's scripts decode them).

Byte-level tokenizers split a CJK character into two or three tokens that are each only a part of
its UTF-8 bytes; decoded alone, each gives U+FFFD. The page shows such a run as the character(s)
it makes, found by decoding growing runs of the actual token ids (no tokenizer-specific byte
tables), so it works for byte-level BPE and SentencePiece byte fallback alike.
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Sequence
from typing import Any

#: Decoding this means the token is only part of a character.
REPLACEMENT = "\ufffd"
#: Longest run of byte pieces tried as one unit (a UTF-8 character has at most 4 bytes; a piece
#: may also carry whole characters before or after its partial bytes).
MAX_RUN = 8
#: The page's compact integers: fixed-width base 64, this alphabet (URL-safe base64's).
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"


def token_text(tokenizer: Any, token_id: int) -> str:
    """What one token decodes to alone (U+FFFD inside: it is part of a character)."""
    return tokenizer.decode([int(token_id)])


@functools.cache
def _byte_level() -> dict[str, int]:
    """GPT-2's byte-level alphabet (a printable character for each byte), reversed: character -> byte."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("\xa1"), ord("\xac") + 1),
        *range(ord("\xae"), ord("\xff") + 1),
    ]
    chars, extra = dict(zip(printable, printable)), 0
    for b in range(256):
        if b not in chars:
            chars[b], extra = 256 + extra, extra + 1
    return {chr(c): b for b, c in chars.items()}


def raw_token(tokenizer: Any, token_id: int) -> str:
    r"""A token that is only part of a character, as its bytes (``\xe7`` for each partial one), in angle quotes.

    Byte-level BPE spells bytes with GPT-2's alphabet, SentencePiece byte fallback as ``<0xE7>``;
    anything else is shown as the vocabulary spells it.
    """
    raw = str(tokenizer.convert_ids_to_tokens(int(token_id)))
    table = _byte_level()
    if match := re.fullmatch(r"<0x([0-9A-Fa-f]{2})>", raw):
        raw = f"\\x{match.group(1).lower()}"
    elif raw and all(c in table for c in raw):
        raw = bytes(table[c] for c in raw).decode("utf-8", "backslashreplace")
    return "\u2039" + raw + "\u203a"


def shown_token(tokenizer: Any, token_id: int, decoded: str | None) -> str:
    """The text the page shows for a token alone: ``decoded`` (its text decoded alone), a byte piece as
    its raw bytes (:func:`raw_token`), ``#id`` for an id past the tokenizer's vocabulary (``decoded`` None)."""
    if decoded is None:
        return f"#{token_id}"
    return raw_token(tokenizer, token_id) if REPLACEMENT in decoded else decoded


def merged_runs(tokenizer: Any, ids: Sequence[int], partial: set[int] | None = None) -> list[tuple[int, int, str]]:
    """``(start, length, text)`` for each run of tokens that only together decode to whole characters.

    A run starts at a token whose own decoding holds U+FFFD and grows one token at a time (up to
    ``MAX_RUN``) until the run decodes cleanly. A piece that never does (a window that cuts a
    character) is left alone. ``partial`` (the ids known to be pieces) saves decoding every token.
    """
    ids = [int(i) for i in ids]
    if partial is None:
        partial = {i for i in set(ids) if REPLACEMENT in token_text(tokenizer, i)}
    out: list[tuple[int, int, str]] = []
    p = 0
    while p < len(ids):
        if ids[p] not in partial:
            p += 1
            continue
        for end in range(p + 2, min(p + MAX_RUN, len(ids)) + 1):
            text = tokenizer.decode(ids[p:end])
            if REPLACEMENT not in text:
                out.append((p, end - p, text))
                p = end
                break
        else:
            p += 1
    return out


def id_width(n: int) -> int:
    """Characters per number in :func:`encode_ints` for numbers below ``n``."""
    width = 1
    while len(ALPHABET) ** width < n:
        width += 1
    return width


def encode_ints(values: Sequence[int], width: int) -> str:
    """Non-negative integers as one string of ``width`` base-64 characters each (most significant first)."""
    top, base = len(ALPHABET) ** width, len(ALPHABET)
    chars = []
    for v in values:
        v = int(v)
        if not 0 <= v < top:
            raise ValueError(f"{v} does not fit {width} base-64 characters")
        chars.append("".join(ALPHABET[(v // base**k) % base] for k in range(width - 1, -1, -1)))
    return "".join(chars)


def decode_ints(text: str, width: int) -> list[int]:
    """Inverse of :func:`encode_ints` (the page's script does the same)."""
    out = []
    for s in range(0, len(text), width):
        v = 0
        for c in text[s : s + width]:
            v = v * len(ALPHABET) + ALPHABET.index(c)
        out.append(v)
    return out


#: Fixed-point floats: 3 characters (18 bits) each, around this zero; code 0 (never a value's) means "none".
FIXED_WIDTH = 3
_FIXED_ZERO = len(ALPHABET) ** FIXED_WIDTH // 2
_FIXED_NONE = 0


def encode_fixed(values: Sequence[float]) -> dict:
    """Floats as ``{"s": step, "d": codes}``: ``value = (code - 2**17) * step``, one step being the
    largest magnitude / (2**17 - 1), so the error is at most step / 2; nan/inf become "none" (null)."""
    finite = [abs(v) for v in values if math.isfinite(v)]
    step = max(finite) / (_FIXED_ZERO - 1) if finite and max(finite) > 0 else 1.0
    codes = [_FIXED_ZERO + round(v / step) if math.isfinite(v) else _FIXED_NONE for v in values]
    return {"s": step, "d": encode_ints(codes, FIXED_WIDTH)}


def decode_fixed(packed: dict) -> list[float | None]:
    """Inverse of :func:`encode_fixed`, to its precision."""
    return [
        None if c == _FIXED_NONE else (c - _FIXED_ZERO) * packed["s"] for c in decode_ints(packed["d"], FIXED_WIDTH)
    ]


def fnv1a(text: str) -> int:
    """32-bit FNV-1a of the UTF-8 bytes: the page finds a token's search shard with the same hash."""
    h = 0x811C9DC5
    for b in text.encode("utf-8"):
        h = ((h ^ b) * 0x01000193) & 0xFFFFFFFF
    return h
