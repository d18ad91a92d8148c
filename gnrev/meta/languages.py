"""Few-shot character models of real languages, whose task tree is the language family tree.

A task is one language, or one (language, frequency band) pair when ``num_bands > 1`` (the
analogue of the paper's (language, genre) tasks). Its data are words of that language from
:mod:`gnrev.data.languages`: ``num_support`` support words and ``num_query`` disjoint query
words, drawn afresh at every :meth:`LanguageTasks.sample`. The learner predicts each next
character of a word from the ``context`` characters before it (``PAD`` before the first letter,
``END`` after the last), with one small model shared by all tasks (:func:`char_mlp_logits`);
the loss is bits per character, end of word included (:func:`bits_per_char`).

Each language's ``num_words`` most frequent words are cut into ``num_bands`` frequency bands of
equal size and every band is split once, at random with ``seed``, into a meta-train word pool
and a disjoint meta-test word pool (``test_fraction`` of it). Three splits sample from them:

* ``"train"``: the meta-training languages (all but ``held_out``), meta-train words;
* ``"test"``: the same languages, meta-test words (never seen in meta-training);
* ``"held_out"``: every language, meta-test words; only the held-out languages' query words
  count. A held-out language is adapted beside the meta-training languages, so its place in
  the tree (e.g. ``sk`` under West Slavic with ``cs`` and ``pl``) decides which support
  gradients it pools with; the query weights make the mean query loss over the meta-batch
  equal the mean over the held-out tasks alone.

The meta-batch of a split holds all its tasks, in tree order, so the tree schedule is the same
for every batch: ``labels[k]`` groups the tasks by ``levels[k]`` (``"family"``,
``"branch"``, ``"subbranch"``, ``"language"``), followed by singleton rows up to ``num_steps``.
"""

from __future__ import annotations

import math
from typing import Callable, Iterable, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from gnrev.data import languages as lang_data

SPLITS = ("train", "test", "held_out")
# One held-out language per sub-branch that keeps a sibling in meta-training.
DEFAULT_HELD_OUT = ("lv", "ms", "pt", "sk", "sv")


def char_mlp_init(key, *, context: int = 4, embed_dim: int = 16, hidden: int = 64,
                  vocab_size: int = lang_data.VOCAB_SIZE) -> dict:
  """Parameters of :func:`char_mlp_logits`: embedding ``(V, e)``, hidden ``(c e, h)``, output."""
  k_embed, k_hidden, k_out = jax.random.split(key, 3)
  fan_in = context * embed_dim
  return {
      "embed": jax.random.normal(k_embed, (vocab_size, embed_dim)),
      "hidden": {"w": jax.random.normal(k_hidden, (fan_in, hidden)) / math.sqrt(fan_in),
                 "b": jnp.zeros(hidden)},
      "out": {"w": jax.random.normal(k_out, (hidden, vocab_size)) / math.sqrt(hidden),
              "b": jnp.zeros(vocab_size)},
  }


def char_mlp_logits(params, contexts: jax.Array) -> jax.Array:
  """Next-character logits ``(..., V)`` from int ``(..., c)`` contexts: the ``c`` embeddings are
  concatenated in order (the model knows which position each character is at), then one tanh
  layer."""
  embedded = params["embed"][contexts]
  flat = embedded.reshape(contexts.shape[:-1] + (-1,))
  h = jnp.tanh(flat @ params["hidden"]["w"] + params["hidden"]["b"])
  return h @ params["out"]["w"] + params["out"]["b"]


def bits_per_char(params, batch) -> jax.Array:
  """Weighted next-character cross-entropy of one task in bits, ``sum w * -log2 p(y | x)``.

  Args:
    params: :func:`char_mlp_init` parameters.
    batch: ``(contexts, targets, weights)``: int ``(m, L + 1, c)``, int ``(m, L + 1)`` and float
      ``(m, L + 1)``. :meth:`LanguageTasks.sample` makes the weights ``1 / (characters of the
      task's words)`` on real characters and 0 on padding, so the loss is bits per character.

  Returns:
    A scalar.
  """
  contexts, targets, weights = batch
  log_probs = jax.nn.log_softmax(char_mlp_logits(params, contexts))
  nats = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  return jnp.sum(weights * nats) / math.log(2.0)


def tree_order(languages: Iterable[str]) -> tuple[str, ...]:
  """The languages in the order of :data:`gnrev.data.languages.LANGUAGE_TREE` (siblings
  together)."""
  rank = {lang: i for i, lang in enumerate(lang_data.LANGUAGE_PATHS)}
  return tuple(sorted(lang_data.check_languages(languages), key=rank.__getitem__))


class LanguageTasks:
  """Samples meta-batches ``(support, query, labels)`` of character-level language tasks.

  Args:
    split: ``"train"``, ``"test"`` or ``"held_out"`` (module docstring).
    languages: the languages of the task family (default: all of
      :data:`gnrev.data.languages.LANGUAGES`).
    held_out: languages never meta-trained on; they appear only in the ``"held_out"`` split.
    num_words: most frequent words kept per language.
    num_bands: frequency bands per language; tasks are (language, band) pairs.
    num_support, num_query: words per task in the support and query sets (disjoint).
    test_fraction: share of each band's words in the meta-test pool.
    levels: tree levels of the schedule's rows, coarse to fine, from
      ``("family", "branch", "subbranch", "language")``; default all of them, without
      ``"language"`` when ``num_bands == 1`` (it would group single tasks).
    num_steps: rows of ``labels`` (inner steps); default ``len(levels)``; extra rows are
      singletons (MAML steps at the leaves).
    context: characters the model sees before the one it predicts.
    min_length, max_length: letters per kept word.
    seed: seed of the meta-train / meta-test word split (the same for every split object).
    embed_dim, hidden: sizes of the shared character model (:meth:`init_params`).
    source: ``source(language) -> words`` (default: wordfreq's bundled lists).

  Example:
    >>> tasks = LanguageTasks("train", num_support=5)
    >>> support, query, labels = tasks.sample(jax.random.key(0))
    >>> support[0].shape, labels.shape                       # (n, K, L + 1, c), (steps, n)
    ((22, 5, 13, 4), (3, 22))
    >>> params = tasks.init_params(jax.random.key(1))
    >>> bits = tasks.loss_fn(params, jax.tree.map(lambda a: a[0], support))   # task 0
    >>> 3.0 < float(bits) < 8.0            # bits/char before training: near log2(alphabet)
    True
  """

  loss_fn = staticmethod(bits_per_char)

  def __init__(self, split: str = "train", languages: Sequence[str] | None = None,
               held_out: Sequence[str] = DEFAULT_HELD_OUT, num_words: int = 2000,
               num_bands: int = 1, num_support: int = 5, num_query: int = 10,
               test_fraction: float = 0.5, levels: Sequence[str] | None = None,
               num_steps: int | None = None, context: int = 4, min_length: int = 2,
               max_length: int = 12, seed: int = 0, embed_dim: int = 8, hidden: int = 32,
               source: Callable[[str], Iterable[str]] | None = None):
    if split not in SPLITS:
      raise ValueError(f"Unknown split {split!r}; allowed: {list(SPLITS)}.")
    languages = tree_order(lang_data.LANGUAGES if languages is None else languages)
    held_out = tuple(lang_data.check_languages(held_out))
    missing = sorted(set(held_out) - set(languages))
    if missing:
      raise ValueError(f"held_out languages {missing} are not among languages {list(languages)}.")
    train_languages = tuple(lang for lang in languages if lang not in held_out)
    if not train_languages:
      raise ValueError("Every language is held out; keep at least one for meta-training.")
    if split == "held_out" and not held_out:
      raise ValueError("split='held_out' needs at least one held_out language.")
    levels = tuple(lang_data.LEVELS[:3] if num_bands == 1 else lang_data.LEVELS
                   ) if levels is None else tuple(levels)
    bad = [lv for lv in levels if lv not in lang_data.LEVELS]
    if bad or not levels or list(levels) != sorted(levels, key=lang_data.LEVELS.index):
      raise ValueError(f"levels must be distinct tree levels, coarse to fine, from "
                       f"{list(lang_data.LEVELS)}; got {list(levels)}.")
    num_steps = len(levels) if num_steps is None else int(num_steps)
    if num_steps < len(levels):
      raise ValueError(f"num_steps={num_steps} must be >= len(levels)={len(levels)}.")
    for name, value in (("num_bands", num_bands), ("num_support", num_support),
                        ("num_query", num_query), ("context", context),
                        ("embed_dim", embed_dim), ("hidden", hidden)):
      if int(value) < 1:
        raise ValueError(f"{name} must be a positive integer, got {value}.")
    if not 0.0 < test_fraction < 1.0:
      raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}.")
    band_size = num_words // num_bands
    test_size = int(round(test_fraction * band_size))
    pool_size = min(band_size - test_size, test_size)
    needed = num_support + num_query
    if pool_size < needed:
      raise ValueError(
          f"Each word pool holds {pool_size} words (num_words={num_words} / num_bands="
          f"{num_bands}, test_fraction={test_fraction}) but a task draws num_support + num_query "
          f"= {needed}; raise num_words or lower the shots.")

    self.split, self.languages, self.held_out = split, languages, held_out
    self.train_languages = train_languages
    self.num_bands, self.num_support, self.num_query = num_bands, num_support, num_query
    self.levels, self.num_steps, self.context = levels, num_steps, context
    self.max_length = max_length
    self.embed_dim, self.hidden = embed_dim, hidden
    split_languages = train_languages if split != "held_out" else languages
    words = lang_data.load_words(split_languages, band_size * num_bands, min_length=min_length,
                                 max_length=max_length, source=source)
    rng = np.random.default_rng(seed)
    pools, tasks = [], []
    # The word split is drawn per (language, band) in tree order over ALL languages, so a
    # language's pools do not depend on the split or on which languages are held out.
    for lang in lang_data.LANGUAGE_PATHS:
      for band in range(num_bands):
        order = rng.permutation(band_size)
        if lang not in split_languages:
          continue
        band_words = words[lang][band * band_size:(band + 1) * band_size]
        chosen = order[:test_size] if split != "train" else order[test_size:]
        pools.append(lang_data.encode_words([band_words[i] for i in chosen[:pool_size]],
                                            max_length))
        tasks.append((lang, band))
    self.tasks = tuple(tasks)
    self.task_languages = tuple(lang for lang, _ in tasks)
    self.num_tasks = len(tasks)
    self.pool_size = pool_size
    self._pools = np.stack(pools)                 # (n, pool_size, max_length) uint8
    self.pool_words = {task: [lang_data.decode_word(w) for w in pool]
                       for task, pool in zip(tasks, self._pools)}
    self.is_evaluated = np.array([split != "held_out" or lang in held_out
                                  for lang in self.task_languages])
    # Query weights scale so that the mean over the batch's tasks is the mean over the
    # evaluated ones (all tasks except in the held-out split).
    self._query_scale = self.is_evaluated * (self.num_tasks / self.is_evaluated.sum())
    rows = [self.level_labels(level) for level in levels]
    rows += [np.arange(self.num_tasks, dtype=np.int32)] * (num_steps - len(levels))
    self.labels = np.stack(rows).astype(np.int32)

  def level_labels(self, level: str) -> np.ndarray:
    """int32 ``(n,)`` cluster ids of the tasks at a tree level; ``"language"`` groups the bands
    of a language (singletons when ``num_bands == 1``)."""
    return lang_data.level_labels(self.task_languages, level)

  def init_params(self, key, *, embed_dim: int | None = None, hidden: int | None = None) -> dict:
    """Parameters of the shared character model (sizes: the family's unless given)."""
    return char_mlp_init(key, context=self.context,
                         embed_dim=self.embed_dim if embed_dim is None else embed_dim,
                         hidden=self.hidden if hidden is None else hidden)

  def _word_batch(self, words: jax.Array, scale: jax.Array):
    """``(contexts, targets, weights)`` of int ``(n, m, L)`` letter codes (see bits_per_char)."""
    num_positions = self.max_length + 1
    lengths = jnp.sum(words >= 2, axis=-1, keepdims=True)
    position = jnp.arange(num_positions)
    targets = jnp.concatenate([words, jnp.zeros(words.shape[:-1] + (1,), words.dtype)], axis=-1)
    targets = jnp.where(position == lengths, lang_data.END, targets)
    padded = jnp.concatenate(
        [jnp.full(words.shape[:-1] + (self.context,), lang_data.PAD, words.dtype), words], axis=-1)
    contexts = padded[..., position[:, None] + jnp.arange(self.context)]
    mask = (position <= lengths).astype(jnp.result_type(float))
    weights = mask / jnp.sum(mask, axis=(1, 2), keepdims=True) * scale[:, None, None]
    return contexts, targets, weights

  def sample(self, key):
    """One meta-batch over all the split's tasks.

    Returns:
      ``(support, query, labels)``: ``support = (contexts, targets, weights)`` with leaves
      ``(n, num_support, max_length + 1, ...)`` (:func:`bits_per_char`), ``query`` alike with
      ``num_query`` words disjoint from the support words, ``labels`` the language tree as an
      int32 ``(num_steps, n)`` schedule. Jittable and vmappable over keys.
    """
    # The top num_support + num_query of i.i.d. uniforms are distinct indices drawn uniformly
    # without replacement (cheaper than a full permutation of the pool).
    scores = jax.random.uniform(key, (self.num_tasks, self.pool_size))
    _, picks = jax.lax.top_k(scores, self.num_support + self.num_query)
    pools = jnp.asarray(self._pools)
    words = jnp.take_along_axis(pools, picks[..., None], axis=1).astype(jnp.int32)
    ones = jnp.ones(self.num_tasks, jnp.result_type(float))
    support = self._word_batch(words[:, :self.num_support], ones)
    query = self._word_batch(words[:, self.num_support:],
                             jnp.asarray(self._query_scale, jnp.result_type(float)))
    return support, query, jnp.asarray(self.labels)
