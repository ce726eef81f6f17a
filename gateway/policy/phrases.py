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

import itertools
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
    if chunk.isascii() and chunk.isalpha():  # fast path: one plain word
        return (
            {chunk, _REPEAT.sub(r"\1", chunk), _REPEAT.sub(r"\1\1", chunk)}
            if _REPEAT.search(chunk)
            else {chunk}
        )
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
        # Two tables: phrases may join any positions, single words only single-character ones.
        self._keys: dict[bool, dict[str, list[_Entry]]] = {True: {}, False: {}}
        self._prefixes: dict[bool, set[str]] = {True: set(), False: set()}
        self._longest = 0

    def add(self, term: Term, owner: int) -> None:
        if term.kind != "exact":
            return
        key, phrase = term.key.replace(" ", ""), " " in term.key
        self._keys[phrase].setdefault(key, []).append(_Entry(owner, term.source, phrase))
        self._prefixes[phrase].update(key[:i] for i in range(1, len(key) + 1))
        self._longest = max(self._longest, len(key))

    def __bool__(self) -> bool:
        return bool(self._keys[True] or self._keys[False])

    def hits(self, analysis: Analysis) -> list[Hit]:
        phrases, words = self._prefixes[True], self._prefixes[False]
        if not phrases and not words:
            return []
        if not _worth_walking(analysis, phrases):
            return []
        stream = positions(analysis)
        out: list[Hit] = []
        for i, first in enumerate(stream):
            spaced = first.single and i + 1 < len(stream) and stream[i + 1].single
            candidate = (phrases and not first.forms.isdisjoint(phrases)) or (spaced and words)
            if candidate and _may_start(stream, i):
                out.extend(self._walk(stream, i, True))
                if spaced:
                    out.extend(self._walk(stream, i, False))
        return out

    def _walk(self, stream: list[Position], i: int, phrase: bool) -> Iterable[Hit]:
        """Depth-first over concatenations of consecutive positions' forms that stay key prefixes."""
        keys, prefixes = self._keys[phrase], self._prefixes[phrase]
        todo = [(i, form) for form in stream[i].forms if form in prefixes]
        while todo:
            j, acc = todo.pop()
            found = keys.get(acc)
            # One position is already a word hit; for a phrase it means its words run together.
            if found and (j > i or phrase) and _may_end(stream, j):
                yield from (Hit(e.owner, e.source, stream[i].start, stream[j].end) for e in found)
            if j + 1 < len(stream) and len(acc) < self._longest and (phrase or stream[j + 1].single):
                todo.extend((j + 1, acc + f) for f in stream[j + 1].forms if acc + f in prefixes)


def _worth_walking(analysis: Analysis, phrase_prefixes: set[str]) -> bool:
    """Cheap screen (the common case is no hit): a word or decoded variant that can begin a phrase,
    or two single characters in a row (a spaced-out word). Otherwise no walk can find anything."""
    words = analysis.words
    if any(len(a[0]) == 1 and len(b[0]) == 1 for a, b in itertools.pairwise(words)):
        return True
    if not phrase_prefixes:
        return False
    return any(w in phrase_prefixes for w, _, _ in words) or any(
        w in phrase_prefixes for w, _, _ in analysis.variants
    )


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
