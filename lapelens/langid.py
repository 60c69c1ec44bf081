"""Offline language identification, shared by the whole package.

Two independent identifiers, so that a check never grades its own homework:

- :func:`detect_language` uses **langdetect**, the tool of Tang et al. (2024) for the steering
  tables; lapelens uses it to score generations and, in the tests, to audit the embedded corpus.
- :func:`langid_language` uses **langid.py**, a different model and feature set; the corpus build
  filters with it.

Both return lapelens language codes (``"zh"``, not ``"zh-cn"``) and ``"unknown"`` when they cannot
decide. The models load on first use, not at import.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

UNKNOWN = "unknown"

# Codes the identifiers emit -> lapelens codes. Everything else passes through unchanged.
_TO_LAPELENS = {"zh-cn": "zh", "zh-tw": "zh", "zh-hans": "zh", "zh-hant": "zh"}


def _normalise(code: str) -> str:
    code = code.lower()
    return _TO_LAPELENS.get(code, code)


def is_han(char: str) -> bool:
    """A Chinese character (CJK Unified Ideographs, Extension A, or Compatibility)."""
    return "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf" or "\uf900" <= char <= "\ufaff"


@lru_cache(maxsize=1)
def _langdetect_factory() -> Any:
    from langdetect.detector_factory import PROFILES_DIRECTORY, DetectorFactory

    factory = DetectorFactory()
    factory.load_profile(PROFILES_DIRECTORY)
    # langdetect's Korean profile is full of Chinese-character n-grams, so it calls most Chinese
    # text Korean (Mimino666/langdetect#51: '我爱北京天安门' -> ko with p = 0.99999). We apply the
    # upstream-proposed fix (Mimino666/langdetect#9): Korean gets no weight for n-grams made of
    # Chinese characters. Korean itself is written in Hangul, so its detection is unaffected.
    ko = factory.langlist.index("ko")
    for ngram, probs in factory.word_lang_prob_map.items():
        if any(is_han(c) for c in ngram):
            probs[ko] = 0.0
    # langdetect samples n-grams at random; a fixed seed makes the same text always get the same answer.
    factory.set_seed(0)
    return factory


def detect_language(text: str) -> str:
    """The language of ``text`` by langdetect (the paper's tool, seed 0, Korean-profile fix), or ``"unknown"``."""
    if not text or not text.strip():
        return UNKNOWN
    from langdetect.lang_detect_exception import LangDetectException

    try:
        detector = _langdetect_factory().create()
        detector.append(text)
        return _normalise(detector.detect())
    except LangDetectException:  # no letters, only digits/punctuation, ...
        return UNKNOWN


def detect_languages(texts: Iterable[str]) -> list[str]:
    """:func:`detect_language` of each text."""
    return [detect_language(text) for text in texts]


@lru_cache(maxsize=1)
def _langid_identifier() -> Any:
    from langid.langid import LanguageIdentifier, model

    return LanguageIdentifier.from_modelstring(model, norm_probs=True)


def langid_language(text: str) -> str:
    """The language of ``text`` by langid.py (independent of langdetect), or ``"unknown"``."""
    code, _ = langid_classify(text)
    return code


def langid_classify(text: str) -> tuple[str, float]:
    """langid.py's language and its normalised probability; ``("unknown", 0.0)`` for empty text."""
    probs = langid_probabilities(text)
    if not probs:
        return UNKNOWN, 0.0
    best = max(probs, key=probs.__getitem__)
    return best, probs[best]


def langid_probabilities(text: str) -> dict[str, float]:
    """langid.py's normalised probability of every language it knows (lapelens codes); ``{}`` if empty."""
    if not text or not text.strip():
        return {}
    import numpy as np

    ident = _langid_identifier()
    # Same model and arithmetic as LanguageIdentifier.classify, but the naive-Bayes product is
    # taken over the non-zero features only: langid's dense uint32 x float64 product is ~50x slower.
    fv = ident.instance2fv(text)
    nz = fv.nonzero()[0]
    scores = fv[nz].astype(np.float64) @ ident.nb_ptc[nz] + ident.nb_pc
    with np.errstate(over="ignore"):
        probs = np.exp(scores - scores.max())
    probs /= probs.sum()
    return {_normalise(str(code)): float(p) for code, p in zip(ident.nb_classes, probs)}
