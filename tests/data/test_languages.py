"""Language word lists: normalisation onto one alphabet on a fake source, the real wordfreq lists
(offline), and the family tree."""

import socket
import sys

import numpy as np
import pytest

from gnrev.data import languages as ld

EXPECTED_LANGUAGES = ("ca", "cs", "da", "de", "en", "es", "fi", "fil", "fr", "hu", "id", "is",
                      "it", "lt", "lv", "ms", "nb", "nl", "pl", "pt", "ro", "sh", "sk", "sl", "sv",
                      "tr", "vi")


def fake_source(lists):
  return lambda language: iter(lists[language])


@pytest.mark.parametrize("raw,expected", [
    ("Éléphant", "elephant"), ("straße", "strasse"), ("Øl", "ol"), ("cœur", "coeur"),
    ("łódź", "lodz"), ("Þorn", "thorn"), ("ılık", "ilik"), ("İstanbul", "istanbul"),
    ("người", "nguoi"), ("đường", "duong"), ("l’homme", "l'homme"), ("Ærø", "aero"),
    ("2000", None), ("col·legi", None), ("e.g.", None), ("москва", None), ("", None),
])
def test_normalise_word_maps_onto_the_shared_alphabet_or_drops(raw, expected):
  assert ld.normalise_word(raw) == expected


def test_load_words_keeps_frequency_order_drops_and_dedupes():
  lists = {"de": ["Der", "2020", "der", "größe", "a", "sehr-gut", "überlange_wörter", "Über",
                  "x" * 13, "haus"],
           "fi": ["ja", "on", "ei"]}
  words = ld.load_words(["de", "fi"], num_words=3, source=fake_source(lists))
  # "der" repeats "Der" after lower-casing; "a" is too short, 13 x's too long; hyphen and
  # underscore are off the alphabet.
  assert words == {"de": ["der", "grosse", "uber"], "fi": ["ja", "on", "ei"]}


@pytest.mark.parametrize("call,error,message", [
    (lambda s: ld.load_words(["xx"], 2, source=s), ValueError, r"Unknown language.*'xx'.*'ca'"),
    (lambda s: ld.load_words(["fi"], 5, source=s), ValueError,
     r"'fi' has only 3 words.*num_words=5"),
    (lambda s: ld.load_words(["fi"], 0, source=s), ValueError,
     r"num_words must be a positive count, got 0"),
    (lambda s: ld.load_words(["fi"], 2, min_length=4, max_length=3, source=s), ValueError,
     r"min_length <= max_length"),
    (lambda s: ld.level_labels(["fi"], "genus"), ValueError, r"Unknown tree level 'genus'"),
    (lambda s: ld.encode_words(["ab1"], 5), ValueError, r"'ab1' is not on the alphabet"),
], ids=["unknown_language", "too_few_words", "no_words", "bad_lengths", "bad_level",
        "unnormalised_word"])
def test_bad_input_is_named(call, error, message):
  with pytest.raises(error, match=message):
    call(fake_source({"fi": ["ja", "on", "ei"]}))


def test_missing_wordfreq_package_gives_an_install_hint(monkeypatch):
  monkeypatch.setitem(sys.modules, "wordfreq", None)  # makes `import wordfreq` fail
  with pytest.raises(ImportError, match=r"pip install 'gnrev\[languages\]'"):
    ld.load_words(["fi"], 2)


def test_real_wordfreq_lists_load_offline_on_the_alphabet(monkeypatch):
  def no_network(*args, **kwargs):
    raise AssertionError("the word lists must not touch the network")
  monkeypatch.setattr(socket.socket, "connect", no_network)
  monkeypatch.setattr(socket, "create_connection", no_network)
  words = ld.load_words(ld.LANGUAGES, num_words=1000)
  for language, kept in words.items():
    assert len(kept) == len(set(kept)) == 1000, language
    assert all(set(w) <= set(ld.ALPHABET) and 2 <= len(w) <= 12 for w in kept), language
  assert words["fi"][:3] == ["ja", "on", "ei"]
  assert "et" in words["fr"][:20] and "und" in words["de"][:20]
  codes = ld.encode_words(words["vi"][:50], 12)
  assert [ld.decode_word(c) for c in codes] == words["vi"][:50]


def test_tree_places_every_wordfreq_latin_language_once():
  import wordfreq
  assert ld.LANGUAGES == EXPECTED_LANGUAGES
  placed = [lang for branches in ld.LANGUAGE_TREE.values() for subs in branches.values()
            for langs in subs.values() for lang in langs]
  assert sorted(placed) == list(EXPECTED_LANGUAGES)
  assert set(placed) <= set(wordfreq.available_languages("small"))
  assert ld.language_path("sk") == ("Indo-European", "Balto-Slavic", "West Slavic", "sk")
  assert ld.language_path("fil")[0] == "Austronesian"


def test_level_labels_are_nested_and_canonical():
  languages = list(ld.LANGUAGES) + ["de", "de"]  # repeats: one entry per task
  rows = np.stack([ld.level_labels(languages, level) for level in ld.LEVELS])
  assert rows.dtype == np.int32
  for k, row in enumerate(rows):
    for i, j in zip(*np.nonzero(row[:, None] == row[None, :])):
      assert ld.language_path(languages[i])[:k + 1] == ld.language_path(languages[j])[:k + 1]
      if k:  # same cluster at a finer level => same cluster at every coarser one
        assert rows[k - 1, i] == rows[k - 1, j]
    assert all(row[i] == np.flatnonzero(row == row[i]).min() for i in range(len(row)))
  assert len(set(rows[0])) == len(ld.LANGUAGE_TREE) == 5
  assert rows[3, -1] == rows[3, -2] == languages.index("de")
