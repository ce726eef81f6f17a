"""Blocklist phrases are as hard to evade as single words; plain terms match whole words only."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.policy.normalize import TermIndex, analyze, parse_term

TERMS = ["porn star", "sex scene", "without clothes", "kill myself", "nude", "gore", "orgasm*"]


def index(terms: list[str] = TERMS) -> TermIndex:
    idx = TermIndex()
    for i, t in enumerate(terms):
        idx.add(parse_term(t), i)
    return idx


def hits(prompt: str, idx: TermIndex | None = None) -> set[str]:
    return {h.term for h in (idx or index()).hits(analyze(prompt))}


@pytest.mark.parametrize(
    ("prompt", "term"),
    [
        ("a p0rn st4r on stage", "porn star"),  # digits for letters, in each word
        ("a p o r n s t a r on stage", "porn star"),  # letters spaced out across both words
        ("a p.o.r.n s.t.a.r", "porn star"),  # dotted letters
        ("a pornstar", "porn star"),  # words run together
        ("a porn-star", "porn star"),  # punctuation between the words
        ("a p\u043ern st\u0430r", "porn star"),  # Cyrillic look-alikes
        ("a por\u200bn st\u200bar", "porn star"),  # zero-width characters
        ("a s3x sc3ne", "sex scene"),
        ("S E X S C E N E", "sex scene"),
        ("sexscene", "sex scene"),
        ("w1th0ut cl0thes", "without clothes"),
        ("i want to k1ll mys3lf", "kill myself"),
        ("killmyself", "kill myself"),
        ("a n u d e photo", "nude"),  # a spaced word after the article "a"
        ("n u d e", "nude"),
        ("a 0rg4sm1c face", "orgasm*"),  # explicit prefix terms still match longer words
    ],
)
def test_phrases_resist_the_tricks_words_resist(prompt: str, term: str) -> None:
    assert term in hits(prompt), hits(prompt)


@pytest.mark.parametrize(
    "prompt",
    [
        "a sextant on a desk",  # starts with "sex": a plain term matches whole words only
        "s e x t a n t",  # spaced, still the longer word
        "a gorey story",
        "a nudel soup",
        "porn stars",  # a different word ("stars"): whole words only, no plural folding
        "the pornography of violence",  # not the phrase
        "sex appeal of a new scene",  # the words, but not next to each other
        "a star of porn",  # wrong order
        "n u d e l",  # spaced longer word
    ],
)
def test_plain_terms_do_not_match_longer_or_separate_words(prompt: str) -> None:
    assert hits(prompt) - {"orgasm*"} == set() or hits(prompt) == set(), hits(prompt)


# --------------------------------------------------------------------------- properties

WORDS = st.text(alphabet="abcdefghkmnoprstuwxyz", min_size=3, max_size=7)
LEET = {"o": "0", "e": "3", "a": "4", "s": "5", "t": "7", "i": "1"}
HOMOGLYPH = {"a": "\u0430", "e": "\u0435", "o": "\u043e", "p": "\u0440", "c": "\u0441", "x": "\u0445"}


def _leet(w: str) -> str:
    """Digits for letters; a word left with no letter at all stays as is (a number is a number)."""
    out = "".join(LEET.get(c, c) for c in w)
    return out if any(c.isalpha() for c in out) else w


def _homoglyph(w: str) -> str:
    return "".join(HOMOGLYPH.get(c, c) for c in w)


def _zero_width(w: str) -> str:
    return "\u200b".join(w)


TRICKS = {
    "plain": lambda ws: " ".join(ws),
    "leet": lambda ws: " ".join(_leet(w) if any(c in LEET for c in w) else w for w in ws),
    "spaced": lambda ws: " ".join(" ".join(w) for w in ws),
    "run-together": lambda ws: "".join(ws),
    "hyphenated": lambda ws: "-".join(ws),
    "homoglyph": lambda ws: " ".join(_homoglyph(w) for w in ws),
    "zero-width": lambda ws: " ".join(_zero_width(w) for w in ws),
    "dotted": lambda ws: " ".join(".".join(w) for w in ws),
}


@settings(max_examples=300, deadline=None)
@given(
    words=st.lists(WORDS, min_size=1, max_size=3),
    trick=st.sampled_from(sorted(TRICKS)),
    before=st.sampled_from(["", "a photo of ", "the ", "draw a "]),
    after=st.sampled_from(["", " at night", " in oil paint", "."]),
)
def test_a_phrase_is_caught_under_every_trick(words: list[str], trick: str, before: str, after: str) -> None:
    term = " ".join(words)
    if trick == "leet" and not any(c in LEET for c in term):
        trick = "plain"
    prompt = before + TRICKS[trick](words) + after
    assert term in hits(prompt, index([term])), (prompt, term)


@settings(max_examples=300, deadline=None)
@given(word=WORDS, suffix=st.text(alphabet="abcdefghilmnorstuy", min_size=1, max_size=4))
def test_a_plain_term_never_matches_a_longer_word(word: str, suffix: str) -> None:
    if re.search(r"(.)\1\1", word + suffix):
        return  # "nuuude": a letter three times in a row is read as emphasis of the shorter word
    idx = index([word])
    prompts = [f"a {word}{suffix} here"]
    if word[0] not in "ai":  # spaced "a s e x" may also read as the article "a" + "sex" (documented)
        prompts.append(" ".join(word + suffix))
    for prompt in prompts:
        assert hits(prompt, idx) == set(), prompt
    assert hits(f"a {word}{suffix} here", index([word + "*"])) == {word + "*"}
