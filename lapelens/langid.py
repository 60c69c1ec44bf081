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

from functools import lru_cache
from typing import Any, Iterable

UNKNOWN = "unknown"

# Codes the identifiers emit -> lapelens codes. Everything else passes through unchanged.
_TO_LAPELENS = {"zh-cn": "zh", "zh-tw": "zh", "zh-hans": "zh", "zh-hant": "zh"}


def _normalise(code: str) -> str:
    code = code.lower()
    return _TO_LAPELENS.get(code, code)


@lru_cache(maxsize=1)
def _langdetect() -> Any:
    from langdetect import DetectorFactory

    # langdetect samples n-grams at random; a fixed seed makes the same text always get the same answer.
    DetectorFactory.seed = 0
    import langdetect

    return langdetect


def detect_language(text: str) -> str:
    """The language of ``text`` by langdetect (the paper's tool), or ``"unknown"``."""
    if not text or not text.strip():
        return UNKNOWN
    langdetect = _langdetect()
    try:
        return _normalise(langdetect.detect(text))
    except langdetect.LangDetectException:  # no letters, only digits/punctuation, ...
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
    if not text or not text.strip():
        return UNKNOWN, 0.0
    import numpy as np

    ident = _langid_identifier()
    # Same model and arithmetic as LanguageIdentifier.classify, but the naive-Bayes product is
    # taken over the non-zero features only: langid's dense uint32 x float64 product is ~50x slower.
    fv = ident.instance2fv(text)
    nz = fv.nonzero()[0]
    scores = fv[nz].astype(np.float64) @ ident.nb_ptc[nz] + ident.nb_pc
    best = int(np.argmax(scores))
    with np.errstate(over="ignore"):
        prob = 1.0 / np.exp(scores - scores[best]).sum()
    return _normalise(str(ident.nb_classes[best])), float(prob)
