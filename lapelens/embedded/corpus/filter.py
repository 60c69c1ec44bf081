"""Which paragraphs are kept: length, untranslated and duplicate text, symbols and Latin-script
names in CJK text, and agreement of langid.py (and, for mixed CJK text, langdetect); plus the
cap on the languages outside the paper's seven. ``Counts`` records what was dropped and why."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field

from lapelens.langid import detect_language, is_han, langid_probabilities

#: Train characters kept for a language outside the paper's seven (pages sampled by hash), to
#: keep the package small; the paper's languages are never capped.
EXTRA_MAX_TRAIN_CHARS = 1_000_000
#: Minimum length of a kept paragraph, in characters; CJK packs more per character.
MIN_CHARS = 30
MIN_CHARS_CJK = 8
_CJK = {"zh", "ja", "ko"}
#: A paragraph is kept only if langid.py gives its language at least this probability: short
#: technical lines (menu paths, formula examples) are where identifiers disagree.
LANGID_MIN_PROB = 0.9999
#: Letters (str.isalpha) must be at least this share of the non-space characters (drops formulas, code).
MIN_LETTER_SHARE = 0.6
#: In zh/ja/ko, Latin letters (product, command and file names) must be below this share of the letters.
MAX_LATIN_SHARE_CJK = 0.5
#: ... and from this share on, langdetect must agree too: n-gram identifiers misread CJK prose
#: that quotes many Latin names, and langdetect is the one the paper used (it is otherwise kept
#: out of the build, so that the tests can use it as an independent check).
SECOND_OPINION_LATIN_SHARE_CJK = 0.3
#: In ja, kana must be at least this share of the kana + Chinese characters: Japanese prose carries
#: its grammar in kana, and a string of kanji compounds cannot be told from Chinese.
MIN_KANA_SHARE_JA = 0.2
#: Languages langid.py may confuse with a kept one, and accepted for it (Indonesian ~ Malay).
_LANGID_ALIASES = {"id": {"id", "ms"}}
_KANA = re.compile(r"[\u3040-\u30ff\u31f0-\u31ff]")


@dataclass
class Counts:
    """What the build kept and dropped, per language (printed at the end, saved in manifest)."""

    kept: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # lang -> split -> [docs, pars, chars]
    dropped: dict[str, dict[str, int]] = field(default_factory=dict)  # lang -> reason -> n

    def drop(self, lang: str, reason: str) -> None:
        d = self.dropped.setdefault(lang, {})
        d[reason] = d.get(reason, 0) + 1


_LATIN = re.compile(r"[A-Za-z\u00c0-\u024f]")


def is_mixed(lang: str, text: str) -> bool:
    """Too few letters (formulas, code), or a CJK paragraph dominated by Latin-script names."""
    chars = [c for c in text if not c.isspace()]
    letters = [c for c in chars if c.isalpha()]
    if len(letters) < MIN_LETTER_SHARE * len(chars):
        return True
    if lang in _CJK:
        latin = sum(1 for c in letters if _LATIN.match(c))
        if latin >= MAX_LATIN_SHARE_CJK * len(letters):
            return True
        if latin >= SECOND_OPINION_LATIN_SHARE_CJK * len(letters) and detect_language(text) != lang:
            return True
    if lang == "ja":
        kana = len(_KANA.findall(text))
        han = sum(1 for c in text if is_han(c))
        return kana < MIN_KANA_SHARE_JA * (kana + han)
    return False


def _langid_agrees(lang: str, text: str) -> bool:
    probs = langid_probabilities(text)
    accepted = set(_LANGID_ALIASES.get(lang, {lang}))
    # langid.py calls Chinese with 「」 quotes Japanese; Japanese prose always has kana.
    if lang == "zh" and not _KANA.search(text):
        accepted.add("ja")
    return sum(probs.get(code, 0.0) for code in accepted) >= LANGID_MIN_PROB


def keep_paragraph(lang: str, text: str, english: str | None, seen: set[str], counts: Counts) -> bool:
    if len(text) < (MIN_CHARS_CJK if lang in _CJK else MIN_CHARS):
        counts.drop(lang, "short")
    elif lang != "en" and (english is None or text == english):
        counts.drop(lang, "untranslated" if english is not None else "not_in_english")
    elif text in seen:
        counts.drop(lang, "duplicate")
    elif is_mixed(lang, text):
        counts.drop(lang, "mixed_or_symbols")
    elif not _langid_agrees(lang, text):
        counts.drop(lang, "wrong_language")
    else:
        seen.add(text)
        return True
    return False


def cap_pages(rows: list[dict], max_chars: int, dropped: dict[str, int]) -> list[dict]:
    """Whole pages, taken in the order of a hash of their path, up to ``max_chars``; page order kept."""
    by_hash = sorted(rows, key=lambda r: hashlib.sha256(r["page"].encode()).digest())
    keep, total = set(), 0
    for row in by_hash:
        size = len("\n".join(row["paragraphs"]))
        if total + size > max_chars:
            dropped["capped"] = dropped.get("capped", 0) + len(row["paragraphs"])
            continue
        keep.add(row["page"])
        total += size
    return [r for r in rows if r["page"] in keep]
