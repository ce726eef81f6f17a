"""Blocklist matching across chunk boundaries: phrases as strong as words, spaced-out words anywhere.

:mod:`.normalize` resists spacing, punctuation, digits-for-letters, look-alikes and zero-width tricks
for a term that sits inside one whitespace chunk of the prompt. A phrase ("porn star") spans several
chunks, and a word written as "a n u d e" spans single-letter chunks after an article; those used to
slip through. This module matches them on a *position stream*: one position per whitespace chunk of
the folded prompt, each with every form it can stand for (its letters and digits with punctuation
dropped, the leetspeak decodings, long letter repeats collapsed). A term matches when the forms of
consecutive positions concatenate to its letters exactly:

* a phrase matches its words written apart, run together ("pornstar"), hyphenated, with digits for
  letters in any word ("p0rn st4r"), or spelled out letter by letter ("p o r n s t a r");
* a single word matches across positions only when every one of them is a single character (spaced
  letters), never by joining two ordinary words ("pen is" stays innocent);
* a match always covers whole positions, and a run of single characters must be covered to its end
  (and from its start, or right after a leading one-letter word "a"/"i"): "s e x t a n t" is the word
  "sextant", not "sex" plus letters. Prefix matching stays an explicit opt-in (``term*``).

The price of run-together matching is that a phrase's letters written as one innocent word match too
("the rapist" would catch "therapist"); docs/policy.md lists this with the other known trade-offs.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from .normalize import LEET, Analysis, Hit, Term

_WORD = re.compile(r"[^\W_]+")
_LEET_A = str.maketrans(LEET)
_LEET_B = str.maketrans({**LEET, "1": "l", "|": "i"})
_LEETY = re.compile(r"[013457-9@$!|+€]")
_LETTER = re.compile(r"[^\W\d_]")
_REPEAT = re.compile(r"([^\W\d_])\1{2,}")
_ARTICLES = frozenset({"a", "i"})  # one-letter words that may precede a spaced-out word


@dataclass(frozen=True, slots=True)
class Position:
    """One whitespace chunk of the folded prompt: the forms it may stand for, and its span."""

    forms: frozenset[str]
    start: int
    end: int
    single: bool  # one character: part of a spaced-out word


def _forms(chunk: str) -> set[str]:
    joined = "".join(_WORD.findall(chunk))
    if not joined:
        return {chunk.translate(_LEET_A)} if len(chunk) == 1 and chunk in LEET else set()
    forms = {joined}
    if (_LEETY.search(chunk) and _LETTER.search(chunk)) or (len(chunk) == 1 and chunk in LEET):
        forms.add("".join(_WORD.findall(chunk.translate(_LEET_A))))
        forms.add("".join(_WORD.findall(chunk.translate(_LEET_B))))
    for f in list(forms):
        if _REPEAT.search(f):
            forms.update((_REPEAT.sub(r"\1", f), _REPEAT.sub(r"\1\1", f)))
    forms.discard("")
    return forms


def positions(analysis: Analysis) -> list[Position]:
    """The position stream of a prompt (chunks of pure punctuation are skipped, keeping neighbours)."""
    text = analysis.text
    out: list[Position] = []
    pos = 0
    for chunk in text.split():
        s = text.find(chunk, pos)
        pos = s + len(chunk)
        forms = _forms(chunk)
        if forms:
            single = all(len(f) == 1 for f in forms)
            out.append(Position(frozenset(forms), s, pos, single))
    return out


@dataclass(frozen=True, slots=True)
class _Entry:
    owner: int
    source: str
    phrase: bool


class PhraseIndex:
    """Exact terms keyed by their letters with spaces removed, plus every prefix of those keys."""

    def __init__(self) -> None:
        self._keys: dict[str, list[_Entry]] = {}
        self._prefixes: set[str] = set()
        self._longest = 0

    def add(self, term: Term, owner: int) -> None:
        if term.kind != "exact":
            return
        key = term.key.replace(" ", "")
        self._keys.setdefault(key, []).append(_Entry(owner, term.source, " " in term.key))
        self._prefixes.update(key[:i] for i in range(1, len(key) + 1))
        self._longest = max(self._longest, len(key))

    def __bool__(self) -> bool:
        return bool(self._keys)

    def hits(self, analysis: Analysis) -> list[Hit]:
        stream = positions(analysis)
        prefixes = self._prefixes
        if not any(not p.forms.isdisjoint(prefixes) for p in stream):
            return []
        out: list[Hit] = []
        for i, first in enumerate(stream):
            if first.forms.isdisjoint(prefixes) or not _may_start(stream, i):
                continue
            out.extend(self._walk(stream, i))
        return out

    def _walk(self, stream: list[Position], i: int) -> Iterable[Hit]:
        todo = [(i, form) for form in stream[i].forms if form in self._prefixes]
        while todo:
            j, acc = todo.pop()
            found = self._keys.get(acc)
            if found and j > i and _may_end(stream, j):
                all_single = all(p.single for p in stream[i : j + 1])
                for e in found:
                    if e.phrase or all_single:
                        yield Hit(e.owner, e.source, stream[i].start, stream[j].end)
            elif found and j == i and any(e.phrase for e in found) and _may_end(stream, j):
                # A phrase written as one chunk ("pornstar", "porn-star"): words run together.
                yield from (Hit(e.owner, e.source, stream[i].start, stream[j].end) for e in found if e.phrase)
            if j + 1 < len(stream) and len(acc) < self._longest:
                todo.extend((j + 1, acc + f) for f in stream[j + 1].forms if acc + f in self._prefixes)


def _may_start(stream: list[Position], i: int) -> bool:
    """A match may not begin inside a run of single characters (except after a leading "a"/"i")."""
    if not stream[i].single or i == 0 or not stream[i - 1].single:
        return True
    article_first = i == 1 or not stream[i - 2].single
    return article_first and not stream[i - 1].forms.isdisjoint(_ARTICLES)


def _may_end(stream: list[Position], j: int) -> bool:
    """A match that ends on a single character must end the run ("s e x t a n t" is one word)."""
    return not stream[j].single or j + 1 == len(stream) or not stream[j + 1].single


__all__ = ["PhraseIndex", "Position", "positions"]
