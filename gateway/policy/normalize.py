"""Evasion-resistant text normalisation and a fast term index for prompt blocklists.

A blocklist that compares raw strings is defeated by the first person who types ``NÜDE``, ``nudе``
(Cyrillic ``е``), ``nu\u200bde``, ``n.u.d.e``, ``n u d e`` or ``nud3``. A blocklist that compares
*substrings* of a normalised text blocks "Scunthorpe", "therapist" and "cocktail". So we do both halves
of the job deliberately:

1. :func:`fold` turns text into one canonical form: compatibility decomposition (fullwidth, math
   alphanumerics, circled letters, ligatures), case folding, removal of combining marks (diacritics)
   and invisible format characters (zero-width space/joiner, soft hyphen, bidi overrides, tags), and a
   table of confusables (Cyrillic, Greek, Armenian look-alikes, small capitals, regional indicators).
2. :func:`analyze` splits the folded text into *words* (never substrings) and adds de-obfuscated
   *variants* of each whitespace chunk: punctuation inside a chunk removed (``n.u.d.e``), leetspeak
   decoded only in chunks that mix letters with digits or symbols (``nud3``; ``7`` alone stays ``7``),
   runs of single characters joined (``n u d e``), and letters repeated three times or more collapsed
   (``nuuude``). Variants only *add* candidate words, so they can cause a miss nowhere.
3. :class:`TermIndex` looks every candidate word (and the word n-grams, for phrase terms) up in hash
   tables, so 500 terms cost the same as 5: the time goes into one pass over the prompt.

Deliberately not done: joining two ordinary words ("pen is" would become a blocked word) and substring
search inside words. Both trade an evasion for false positives on innocent prompts; a policy author
who wants them writes a ``regex`` rule or a ``prefix*`` term.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

# ----------------------------------------------------------------------------- folding

# Look-alikes NFKD does not resolve, upper and lower case (mapped *before* case folding, because the
# lower case of a look-alike capital often looks like something else: Greek "Ν" is N, "ν" is v).
_CONFUSABLES: dict[str, str] = {
    # Cyrillic and Greek capitals
    "А": "a", "В": "b", "Е": "e", "К": "k", "М": "m", "Н": "h", "О": "o", "Р": "p", "С": "c", "Т": "t",
    "Х": "x", "Ѕ": "s", "І": "i", "Ј": "j", "Ү": "y", "Ԁ": "d", "Ԛ": "q", "Ԝ": "w", "Ӏ": "l",
    "Α": "a", "Β": "b", "Ε": "e", "Ζ": "z", "Η": "h", "Ι": "i", "Κ": "k", "Μ": "m", "Ν": "n", "Ο": "o",
    "Ρ": "p", "Τ": "t", "Υ": "y", "Χ": "x", "Ϲ": "c",
    # Cyrillic
    "а": "a", "в": "b", "г": "r", "е": "e", "ё": "e", "к": "k", "м": "m", "н": "h", "о": "o", "п": "n",
    "р": "p", "с": "c", "т": "t", "у": "y", "х": "x", "ѕ": "s", "і": "i", "ї": "i", "ј": "j", "һ": "h",
    "ԁ": "d", "ԛ": "q", "ԝ": "w", "ӏ": "l", "ь": "b", "ѡ": "w", "ү": "y", "ʏ": "y",
    # Greek
    "α": "a", "β": "b", "γ": "y", "ε": "e", "η": "n", "ι": "i", "κ": "k", "μ": "u", "ν": "v", "ο": "o",
    "ρ": "p", "τ": "t", "υ": "u", "χ": "x", "ω": "w", "ϲ": "c", "ϳ": "j", "ς": "c",
    # Armenian
    "օ": "o", "ս": "u", "ո": "n", "ց": "g", "զ": "q", "հ": "h",
    # Latin letters without a decomposition
    "ø": "o", "ł": "l", "đ": "d", "ħ": "h", "ŧ": "t", "ı": "i", "ȷ": "j", "ɑ": "a", "ɛ": "e", "ɡ": "g",
    "ɩ": "i", "ɪ": "i", "ʀ": "r", "ꜱ": "s", "æ": "ae", "œ": "oe", "þ": "th", "ð": "d", "ƒ": "f",
}  # fmt: skip

# Unicode names that spell a Latin letter: small capitals, negative squared letters, regional indicators.
_LETTER_NAME = re.compile(r"(?:LATIN|REGIONAL INDICATOR).*\bLETTER (?:SMALL CAPITAL )?([A-Z])(?: WITH .*)?$")
_DELETE = frozenset({"Mn", "Me", "Cf"})  # combining marks and invisible format characters
_SPACE = frozenset({"Zs", "Zl", "Zp", "Cc"})


class _FoldTable(dict[int, int | str | None]):
    """A ``str.translate`` table filled on first sight of each code point (then a dict lookup)."""

    def __missing__(self, cp: int) -> int | str | None:
        ch = chr(cp)
        value: int | str | None
        cat = unicodedata.category(ch)
        if ch in _CONFUSABLES:
            value = _CONFUSABLES[ch]
        elif cat in _DELETE:
            value = None
        elif cat in _SPACE:
            value = " "
        elif cp < 128:
            value = cp
        else:
            m = _LETTER_NAME.search(unicodedata.name(ch, ""))
            value = m.group(1).lower() if m else cp
        if len(self) < 65536:  # bounded: a hostile prompt cannot grow it without limit
            self[cp] = value
        return value


_TABLE = _FoldTable()


def fold(text: str) -> str:
    """Canonical form used for matching: lower case, no diacritics, no invisible characters, Latin
    look-alikes replaced. ASCII input takes a fast path (lower-casing is all it needs). The table runs
    twice: before case folding for capitals, after it for what case folding produced ("ẞ" -> "ss")."""
    if text.isascii():
        return text.lower()
    return unicodedata.normalize("NFKD", text).translate(_TABLE).casefold().translate(_TABLE)


# ----------------------------------------------------------------------------- analysis

LEET: dict[str, str] = {"0": "o", "1": "i", "3": "e", "4": "a", "5": "s", "7": "t", "8": "b", "9": "g",
                        "@": "a", "$": "s", "!": "i", "|": "l", "+": "t", "€": "e"}  # fmt: skip
_LEET_A = str.maketrans(LEET)
_LEET_B = str.maketrans({**LEET, "1": "l", "|": "i"})  # "1" and "|" read either way
_LEETY = re.compile(r"[013457-9@$!|+€]")
_LETTER = re.compile(r"[^\W\d_]")
_WORD = re.compile(r"[^\W_]+")
_REPEAT = re.compile(r"([^\W\d_])\1{2,}")

Span = tuple[str, int, int]  # (word, start, end) in the folded text


@dataclass(slots=True)
class Analysis:
    """A prompt prepared for matching: computed once per request, shared by every text rule."""

    raw: str
    text: str
    words: list[Span]
    variants: list[Span]
    _deobfuscated: str | None = field(default=None, repr=False)

    @property
    def deobfuscated(self) -> str:
        """The folded text with each chunk replaced by its decoded form (for regex rules)."""
        if self._deobfuscated is None:
            # Without variants nothing was disguised: the folded text already is the decoded form.
            self._deobfuscated = deobfuscate(self.text) if self.variants else self.text
        return self._deobfuscated

    def candidates(self) -> Iterator[Span]:
        yield from self.words
        yield from self.variants


def _leet_forms(chunk: str) -> set[str]:
    forms = {chunk.translate(_LEET_A)}
    if "1" in chunk or "|" in chunk:
        forms.add(chunk.translate(_LEET_B))
    return forms


def _single(chunk: str) -> str | None:
    """The one character a chunk stands for in a spaced-out word ("n", "3", "$"), else None."""
    words: list[str] = _WORD.findall(chunk)
    if len(words) == 1 and len(words[0]) == 1:
        return words[0]
    if not words and len(chunk) == 1 and chunk in LEET:
        return chunk
    return None


def analyze(prompt: str) -> Analysis:
    """Fold ``prompt`` and list its words plus the de-obfuscated variants described in the module doc."""
    text = fold(prompt)
    words: list[Span] = []
    variants: list[Span] = []
    run: list[Span] = []  # consecutive single-character chunks ("n u d e")

    def flush() -> None:
        if len(run) >= 3:
            joined = "".join(c for c, _, _ in run)
            start, end = run[0][1], run[-1][2]
            variants.append((joined, start, end))
            for form in _leet_forms(joined):
                if form != joined:
                    variants.append((form, start, end))
        run.clear()

    pos = 0
    for chunk in text.split():
        s = text.find(chunk, pos)
        e = pos = s + len(chunk)
        if chunk.isalpha() or chunk.isdigit():  # fast path: one plain word, nothing to decode
            words.append((chunk, s, e))
            if len(chunk) == 1:
                run.append((chunk, s, e))
            elif run:
                flush()
            continue
        ws = [(w.group(), s + w.start(), s + w.end()) for w in _WORD.finditer(chunk)]
        words.extend(ws)
        single = _single(chunk)
        if single is not None:
            run.append((single, s, e))
        elif ws:  # a chunk of pure punctuation ("." between spaced letters) keeps the run going
            flush()
        if len(ws) > 1:
            variants.append(("".join(w for w, _, _ in ws), s, e))
        if _LEETY.search(chunk) and _LETTER.search(chunk):
            for form in _leet_forms(chunk):
                decoded = _WORD.findall(form)
                variants.extend((w, s, e) for w in decoded)
                if len(decoded) > 1:
                    variants.append(("".join(decoded), s, e))
    flush()
    if _REPEAT.search(text):
        for w, s, e in list(words) + list(variants):
            if _REPEAT.search(w):
                variants.append((_REPEAT.sub(r"\1", w), s, e))
                variants.append((_REPEAT.sub(r"\1\1", w), s, e))
    return Analysis(prompt, text, words, variants)


def deobfuscate(text: str) -> str:
    """One decoded string for regex rules: leet decoded in mixed chunks, spaced letters joined,
    punctuation inside chunks dropped, long letter repeats collapsed. ``text`` must be folded."""
    out: list[str] = []
    run: list[str] = []
    for chunk in text.split():
        single = _single(chunk)
        if single is not None:
            run.append(single)
            continue
        if not _WORD.search(chunk) and run:
            continue
        if run:
            out.append("".join(run).translate(_LEET_A) if len(run) >= 3 else " ".join(run))
            run = []
        if _LEETY.search(chunk) and _LETTER.search(chunk):
            chunk = chunk.translate(_LEET_A)
        out.append("".join(_WORD.findall(chunk)) or chunk)
    if run:
        out.append("".join(run).translate(_LEET_A) if len(run) >= 3 else " ".join(run))
    return _REPEAT.sub(r"\1", " ".join(out))


# ----------------------------------------------------------------------------- terms

TermKind = Literal["exact", "prefix", "suffix"]
MIN_GLOB_STEM = 3


@dataclass(frozen=True, slots=True)
class Term:
    """A parsed blocklist or allow-list entry: folded words, plus an optional leading/trailing ``*``."""

    source: str
    key: str
    kind: TermKind

    @property
    def words(self) -> int:
        return self.key.count(" ") + 1


def parse_term(raw: str) -> Term:
    """Fold a term the way prompts are folded; refuse what could never match or would match everything.

    Inside a whitespace-separated piece punctuation is dropped ("gore-tex" -> "goretex"), exactly as the
    prompt's chunk variant does, so the two always meet.
    """
    stripped = raw.strip()
    kind: TermKind = "exact"
    if stripped.endswith("*") and stripped.startswith("*"):
        raise ValueError(f"term {raw!r}: use a leading or a trailing '*', not both (write a regex rule)")
    if stripped.endswith("*"):
        kind, stripped = "prefix", stripped[:-1]
    elif stripped.startswith("*"):
        kind, stripped = "suffix", stripped[1:]
    if "*" in stripped:
        raise ValueError(f"term {raw!r}: '*' is only allowed at the start or the end")
    pieces = ["".join(_WORD.findall(chunk)) for chunk in fold(stripped).split()]
    key = " ".join(p for p in pieces if p)
    if not key:
        raise ValueError(f"term {raw!r} has no letters or digits left after normalisation")
    if kind != "exact":
        if " " in key:
            raise ValueError(f"term {raw!r}: a '*' term must be a single word")
        if len(key) < MIN_GLOB_STEM:
            raise ValueError(f"term {raw!r}: a '*' term needs at least {MIN_GLOB_STEM} letters")
    return Term(raw, key, kind)


def phrase_pattern(raw: str) -> str:
    """A regex (for the folded text) matching an allow-list phrase on word boundaries, with any
    punctuation or spacing between its words ("gore-tex", "gore tex", "goretex" all match "gore-tex")."""
    parts = [w for chunk in fold(raw).split() for w in _WORD.findall(chunk)]
    if not parts:
        raise ValueError(f"allow-list phrase {raw!r} has no letters or digits left after normalisation")
    return r"(?<![^\W_])" + r"[\W_]*".join(map(re.escape, parts)) + r"(?![^\W_])"


@dataclass(frozen=True, slots=True)
class Hit:
    owner: int
    term: str
    start: int
    end: int


class TermIndex:
    """Every blocklist term of a policy set in hash tables keyed by folded word (or word n-gram).

    ``owner`` is whatever the caller uses to tell rules apart (the rule's position). One lookup pass
    over a prompt returns every (owner, term, span) hit; the caller keeps the owners in scope.
    """

    def __init__(self) -> None:
        self._exact: dict[str, list[tuple[int, str]]] = {}
        self._prefix: dict[int, dict[str, list[tuple[int, str]]]] = {}
        self._suffix: dict[int, dict[str, list[tuple[int, str]]]] = {}
        self._ngrams: set[int] = set()
        self._prefix_re: re.Pattern[str] | None = None
        self._suffix_re: re.Pattern[str] | None = None
        self._prefix_stems: frozenset[str] = frozenset()
        self._suffix_stems: frozenset[str] = frozenset()
        self._phrase_heads: frozenset[str] = frozenset()
        self._dirty = True
        from .phrases import PhraseIndex  # across chunk boundaries: phrases, spaced-out words

        self._phrases = PhraseIndex()

    def add(self, term: Term, owner: int) -> None:
        if term.kind == "exact":
            table = self._exact
            if term.words > 1:
                self._ngrams.add(term.words)
        else:
            tables = self._prefix if term.kind == "prefix" else self._suffix
            table = tables.setdefault(len(term.key), {})
        table.setdefault(term.key, []).append((owner, term.source))
        self._phrases.add(term, owner)
        self._dirty = True

    def __bool__(self) -> bool:
        return bool(self._exact or self._prefix or self._suffix)

    def _compile(self) -> None:
        """Screens for the common case, no hit: the 3-letter stems of glob terms and the first words of
        phrase terms (set lookups), then one C-level regex over the words to confirm a stem."""

        def alternation(keys: Iterable[str]) -> re.Pattern[str] | None:
            alts = sorted(keys, key=len, reverse=True)
            return re.compile(" (?:" + "|".join(map(re.escape, alts)) + ")") if alts else None

        prefixes = [k for table in self._prefix.values() for k in table]
        suffixes = [k[::-1] for table in self._suffix.values() for k in table]
        self._prefix_re, self._suffix_re = alternation(prefixes), alternation(suffixes)
        self._prefix_stems = frozenset(k[:MIN_GLOB_STEM] for k in prefixes)
        self._suffix_stems = frozenset(k[:MIN_GLOB_STEM] for k in suffixes)  # reversed already
        self._phrase_heads = frozenset(k.split(" ", 1)[0] for k in self._exact if " " in k)
        self._dirty = False

    def _screen(self, analysis: Analysis) -> tuple[bool, bool, bool, bool]:
        """Which tables can hit at all (exact, prefix, suffix, n-gram)."""
        if self._dirty:
            self._compile()
        keys = {w for w, _, _ in analysis.words}
        keys.update(w for w, _, _ in analysis.variants)
        exact = not self._exact.keys().isdisjoint(keys)  # iterates the smaller side (the prompt)
        prefix = suffix = ngram = False
        # A leading space before every word lets each regex start with a literal (a fast scan).
        stem = MIN_GLOB_STEM
        if self._prefix_re is not None and any(k[:stem] in self._prefix_stems for k in keys):
            prefix = self._prefix_re.search(" " + " ".join(keys)) is not None
        if self._suffix_re is not None and any(k[-stem:][::-1] in self._suffix_stems for k in keys):
            suffix = self._suffix_re.search(" " + " ".join(k[::-1] for k in keys)) is not None
        if self._ngrams and not self._phrase_heads.isdisjoint(keys):
            ws = [w for w, _, _ in analysis.words]
            grams = (" ".join(ws[i : i + n]) for n in self._ngrams for i in range(len(ws) - n + 1))
            ngram = any(g in self._exact for g in grams)
        return exact, prefix, suffix, ngram

    def hits(self, analysis: Analysis) -> list[Hit]:
        exact_hit, prefix_hit, suffix_hit, ngram_hit = self._screen(analysis)
        if not (exact_hit or prefix_hit or suffix_hit or ngram_hit):
            return self._phrases.hits(analysis) if self._phrases else []
        out: list[Hit] = []
        exact = self._exact if exact_hit else {}
        prefix = tuple(self._prefix.items()) if prefix_hit else ()
        suffix = tuple(self._suffix.items()) if suffix_hit else ()
        for word, s, e in analysis.candidates():
            found = exact.get(word)
            if found:
                out.extend(Hit(o, t, s, e) for o, t in found)
            n = len(word)
            for size, table in prefix:
                if n >= size and (found := table.get(word[:size])):
                    out.extend(Hit(o, t, s, e) for o, t in found)
            for size, table in suffix:
                if n >= size and (found := table.get(word[-size:])):
                    out.extend(Hit(o, t, s, e) for o, t in found)
        if ngram_hit:
            out.extend(self._ngram_hits(analysis.words))
        if self._phrases:
            out.extend(self._phrases.hits(analysis))
        return out

    def _ngram_hits(self, words: list[Span]) -> Iterable[Hit]:
        for size in self._ngrams:
            for i in range(len(words) - size + 1):
                key = " ".join(w for w, _, _ in words[i : i + size])
                found = self._exact.get(key)
                if found:
                    s, e = words[i][1], words[i + size - 1][2]
                    yield from (Hit(o, t, s, e) for o, t in found)


__all__ = ["LEET", "Analysis", "Hit", "Term", "TermIndex", "analyze", "deobfuscate", "fold", "parse_term",
           "phrase_pattern"]  # fmt: skip
