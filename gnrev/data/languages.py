"""Words of 27 Latin-script languages from ``wordfreq``'s bundled lists, and their family tree.

The words come from the ``small`` frequency lists that the PyPI package ``wordfreq`` installs
with itself (``wordfreq/data/small_<lang>.msgpack.gz``); nothing is downloaded. They are read in
descending frequency and put onto one shared alphabet, :data:`ALPHABET` (``a``-``z`` and the
apostrophe), by :func:`normalise_word`:

1. Unicode NFKD decomposition, then every combining mark is removed (``é -> e``, ``ş -> s``,
   ``ř -> r``, ``ő -> o``, Vietnamese tone and vowel marks ``ệ -> e``);
2. lower case; the curly apostrophe ``’`` becomes ``'``;
3. the letters that do not decompose are transliterated (:data:`TRANSLITERATION`):
   ``ß -> ss``, ``æ -> ae``, ``ø -> o``, ``œ -> oe``, ``å`` (decomposes) ``-> a``, ``ł -> l``,
   ``đ``/``ð -> d``, ``þ -> th``, dotless ``ı -> i``;
4. a word that still holds anything else is dropped: in the top 3,000 words of each list these
   are 1-3% of words, numbers (``2000``), abbreviations with a dot or comma, and Catalan's
   middle dot (``col·legi``); other scripts and symbols would go the same way. Also dropped
   are words shorter than ``min_length`` or longer than ``max_length`` letters, and a word
   that normalises onto a more frequent word of the same list (it is kept once).

The tree (:data:`LANGUAGE_TREE`, family -> branch -> sub-branch -> language) follows the
genealogical classification of Glottolog 4.x (Hammarstroem, Forkel, Haspelmath, Bank), cut to
three levels above the language: e.g. Glottolog's Indo-European > Balto-Slavic > Slavic >
West Slavic > Czech-Slovak becomes Indo-European / Balto-Slavic / West Slavic / cs, and its
Austronesian > Malayo-Polynesian > ... > Malayic becomes Austronesian / Malayo-Polynesian /
Malayic. Where Glottolog puts a level in between (Italo-Western, Western Romance), the
sub-branch is the lowest group that holds more than one of our languages or the language's
own group. Serbo-Croatian (``sh``) is one language in wordfreq and here.
"""

from __future__ import annotations

import unicodedata
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

# family -> branch -> sub-branch -> languages (ISO 639 codes as wordfreq names them).
LANGUAGE_TREE: dict[str, dict[str, dict[str, tuple[str, ...]]]] = {
    "Indo-European": {
        "Germanic": {"West Germanic": ("de", "en", "nl"),
                     "North Germanic": ("da", "is", "nb", "sv")},
        "Italic": {"Ibero-Romance": ("es", "pt"), "Gallo-Romance": ("ca", "fr"),
                   "Italo-Dalmatian": ("it",), "Eastern Romance": ("ro",)},
        "Balto-Slavic": {"West Slavic": ("cs", "pl", "sk"), "South Slavic": ("sh", "sl"),
                         "East Baltic": ("lt", "lv")},
    },
    "Uralic": {"Finnic": {"Finnic": ("fi",)}, "Ugric": {"Hungarian": ("hu",)}},
    "Turkic": {"Common Turkic": {"Oghuz": ("tr",)}},
    "Austronesian": {"Malayo-Polynesian": {"Malayic": ("id", "ms"),
                                           "Philippine": ("fil",)}},
    "Austroasiatic": {"Vietic": {"Viet-Muong": ("vi",)}},
}

# The levels of a task's path, coarse to fine.
LEVELS = ("family", "branch", "subbranch", "language")

LANGUAGE_PATHS: dict[str, tuple[str, str, str]] = {
    language: (family, branch, subbranch)
    for family, branches in LANGUAGE_TREE.items()
    for branch, subbranches in branches.items()
    for subbranch, languages in subbranches.items()
    for language in languages
}
LANGUAGES: tuple[str, ...] = tuple(sorted(LANGUAGE_PATHS))

ALPHABET = "abcdefghijklmnopqrstuvwxyz'"
# Token ids of the character model: 0 pads (and stands before a word's first letter), 1 ends a
# word, the letters of ALPHABET are 2, 3, ...
PAD, END = 0, 1
VOCAB_SIZE = 2 + len(ALPHABET)
TRANSLITERATION = {"ß": "ss", "æ": "ae", "ø": "o", "œ": "oe", "ł": "l", "đ": "d", "ð": "d",
                   "þ": "th", "ı": "i", "’": "'"}
_CODES = {c: i + 2 for i, c in enumerate(ALPHABET)}


def check_languages(languages: Iterable[str], distinct: bool = True) -> tuple[str, ...]:
  """The languages as a tuple; a ValueError naming any that are not in :data:`LANGUAGE_TREE`
  (or, with ``distinct``, any repeat)."""
  languages = tuple(languages)
  unknown = [lang for lang in languages if lang not in LANGUAGE_PATHS]
  if unknown:
    raise ValueError(f"Unknown language(s) {unknown}; the tree holds {list(LANGUAGES)}.")
  if distinct and len(set(languages)) != len(languages):
    raise ValueError(f"Languages must be distinct, got {list(languages)}.")
  return languages


def language_path(language: str) -> tuple[str, str, str, str]:
  """``(family, branch, sub-branch, language)`` of a language, e.g. ``language_path("sk")``."""
  check_languages([language])
  return LANGUAGE_PATHS[language] + (language,)


def level_labels(languages: Sequence[str], level: str) -> np.ndarray:
  """int32 ``(n,)`` group ids of ``languages`` (repeats allowed, e.g. one per task) at one tree
  level; a group's id is the index of its first member.

  Example:
    >>> level_labels(["de", "en", "fi", "sv"], "branch").tolist()
    [0, 0, 2, 0]
  """
  if level not in LEVELS:
    raise ValueError(f"Unknown tree level {level!r}; allowed: {list(LEVELS)}.")
  depth = LEVELS.index(level) + 1
  keys = [language_path(lang)[:depth] for lang in check_languages(languages, distinct=False)]
  first = {}
  return np.array([first.setdefault(k, i) for i, k in enumerate(keys)], np.int32)


def normalise_word(word: str) -> str | None:
  """The word on :data:`ALPHABET` (module docstring, steps 1-4), or ``None`` if it cannot be."""
  decomposed = unicodedata.normalize("NFKD", word)
  stripped = "".join(c for c in decomposed if not unicodedata.combining(c)).lower()
  mapped = "".join(TRANSLITERATION.get(c, c) for c in stripped)
  if not mapped or any(c not in _CODES for c in mapped):
    return None
  return mapped


def wordfreq_source(language: str) -> Iterable[str]:
  """Words of ``wordfreq``'s bundled ``small`` list for a language, most frequent first.

  Reads the package's own data file; no network. A clear ImportError if wordfreq is missing.
  """
  try:
    import wordfreq
  except ImportError as err:
    raise ImportError("The language tasks need the 'wordfreq' package (its bundled word lists): "
                      "pip install 'gnrev[languages]' or pip install wordfreq.") from err
  available = wordfreq.available_languages("small")
  if language not in available:
    raise ValueError(f"wordfreq has no 'small' word list for {language!r}; it has "
                     f"{sorted(available)}.")
  return wordfreq.iter_wordlist(language, "small")


def load_words(languages: Sequence[str], num_words: int, *, min_length: int = 2,
               max_length: int = 12,
               source: Callable[[str], Iterable[str]] | None = None) -> dict[str, list[str]]:
  """The ``num_words`` most frequent normalised words of each language.

  Args:
    languages: codes from :data:`LANGUAGES`.
    num_words: words kept per language (most frequent first).
    min_length, max_length: letters a kept word has, inclusive.
    source: ``source(language) -> words``, most frequent first (default: :func:`wordfreq_source`);
      tests inject a small list here.

  Returns:
    ``{language: [word, ...]}`` with exactly ``num_words`` distinct words each, on
    :data:`ALPHABET`, in descending frequency.

  Example:
    >>> words = load_words(["fi", "hu"], num_words=1000)
    >>> len(words["fi"]), words["fi"][:3]
    (1000, ['ja', 'on', 'ei'])
  """
  languages = check_languages(languages)
  if int(num_words) < 1:
    raise ValueError(f"num_words must be a positive count, got {num_words}.")
  if not 1 <= min_length <= max_length:
    raise ValueError(f"Need 1 <= min_length <= max_length, got {min_length}, {max_length}.")
  source = wordfreq_source if source is None else source
  words = {}
  for language in languages:
    kept, seen = [], set()
    for raw in source(language):
      word = normalise_word(raw)
      if word is None or word in seen or not min_length <= len(word) <= max_length:
        continue
      seen.add(word)
      kept.append(word)
      if len(kept) == num_words:
        break
    if len(kept) < num_words:
      raise ValueError(
          f"Language {language!r} has only {len(kept)} words of {min_length}-{max_length} "
          f"letters on the alphabet {ALPHABET!r}; asked for num_words={num_words}.")
    words[language] = kept
  return words


def encode_words(words: Sequence[str], max_length: int) -> np.ndarray:
  """uint8 ``(len(words), max_length)`` letter codes (``a`` is 2), padded with :data:`PAD`."""
  codes = np.full((len(words), max_length), PAD, np.uint8)
  for i, word in enumerate(words):
    if len(word) > max_length or any(c not in _CODES for c in word):
      raise ValueError(f"Word {word!r} is not on the alphabet {ALPHABET!r} within "
                       f"max_length={max_length} letters; normalise it first.")
    codes[i, :len(word)] = [_CODES[c] for c in word]
  return codes


def decode_word(codes: np.ndarray) -> str:
  """Inverse of :func:`encode_words` for one row."""
  return "".join(ALPHABET[int(c) - 2] for c in codes if int(c) >= 2)


def tree_as_text(tree: Mapping = LANGUAGE_TREE) -> str:
  """The tree as indented lines (for reports)."""
  lines = []
  for family, branches in tree.items():
    lines.append(family)
    for branch, subbranches in branches.items():
      lines.append(f"  {branch}")
      for subbranch, languages in subbranches.items():
        lines.append(f"    {subbranch}: {', '.join(languages)}")
  return "\n".join(lines)
