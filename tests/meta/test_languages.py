"""Language tasks: the sampler's shapes, splits and tree labels on a fake word source and on
wordfreq, and the bits-per-character loss against a direct float64 computation."""

import itertools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from gnrev import meta
from gnrev.data import languages as ld
from gnrev.meta import languages as ml

LANGS = ("de", "en", "nl", "cs", "pl", "fi")
HELD_OUT = ("nl", "pl")


def fake_source(language):
  """60 distinct words per language, made from a per-language pair of letters."""
  a, b = ld.ALPHABET[LANGS.index(language)], ld.ALPHABET[10 + LANGS.index(language)]
  return ("".join(w) for n in (2, 3, 4, 5, 6, 7) for w in itertools.product(a + b, repeat=n))


def make(split, **kwargs):
  options = dict(languages=LANGS, held_out=HELD_OUT, num_words=48, num_bands=2, num_support=3,
                 num_query=4, context=3, max_length=7, source=fake_source)
  return ml.LanguageTasks(split, **{**options, **kwargs})


@pytest.fixture(scope="module")
def samples():
  """Each split's task family and one jitted sample (key 1) of it, shared by the tests."""
  out = {}
  for split in ml.SPLITS:
    tasks = make(split)
    out[split] = (tasks,) + tuple(jax.jit(tasks.sample)(jax.random.key(1)))
  return out


def words_of(batch):
  """Decoded words ``[task][word]`` of a sampled ``(contexts, targets, weights)`` batch."""
  _, targets, _ = map(np.asarray, batch)
  return [[ld.decode_word(w) for w in task] for task in targets]


def test_sample_shapes_dtypes_and_tree_labels(samples):
  tasks, support, query, labels = samples["train"]
  n = 2 * 4  # meta-train languages de, en, cs, fi, two bands each
  assert tasks.task_languages == ("de", "de", "en", "en", "cs", "cs", "fi", "fi")
  assert [a.shape for a in support] == [(n, 3, 8, 3), (n, 3, 8), (n, 3, 8)]
  assert [a.shape for a in query] == [(n, 4, 8, 3), (n, 4, 8), (n, 4, 8)]
  assert support[0].dtype == support[1].dtype == jnp.int32 and labels.dtype == jnp.int32
  meta.check_labels(labels, tasks.num_steps, n)
  np.testing.assert_array_equal(labels, [[0, 0, 0, 0, 0, 0, 6, 6],   # family: Indo-European
                                         [0, 0, 0, 0, 4, 4, 6, 6],   # branch: Germanic, B-S
                                         [0, 0, 0, 0, 4, 4, 6, 6],   # sub-branch
                                         [0, 0, 2, 2, 4, 4, 6, 6]])  # language: its two bands
  # Every task's weights sum to one over its real characters: the loss is bits per character.
  np.testing.assert_allclose(np.asarray(support[2]).sum((1, 2)), 1.0, rtol=1e-6)


def test_targets_and_contexts_spell_the_word_then_end(samples):
  _, support, _, _ = samples["train"]
  contexts, targets, weights = (np.asarray(a[0, 0]) for a in support)
  length = int((targets >= 2).sum())
  assert targets[length] == ld.END and (targets[length + 1:] == ld.PAD).all()
  assert (weights[:length + 1] > 0).all() and (weights[length + 1:] == 0).all()
  tokens = [ld.PAD] * 3 + list(targets[:length])
  for t in range(length + 1):  # context of position t: the 3 tokens before it
    np.testing.assert_array_equal(contexts[t], tokens[t:t + 3])


def test_support_and_query_are_disjoint_and_from_the_split_pools(samples):
  for split in ml.SPLITS:
    tasks, support, query, _ = samples[split]
    for task, s_words, q_words in zip(tasks.tasks, words_of(support), words_of(query)):
      assert len(set(s_words) | set(q_words)) == len(s_words) + len(q_words)
      assert set(s_words) | set(q_words) <= set(tasks.pool_words[task])
  train, test = samples["train"][0], samples["test"][0]
  for task in train.tasks:
    assert not set(train.pool_words[task]) & set(test.pool_words[task])
  # Bands are frequency ranks: band 0 holds the 24 most frequent words.
  words = ld.load_words(["de"], 48, max_length=7, source=fake_source)["de"]
  assert set(train.pool_words[("de", 0)]) | set(test.pool_words[("de", 0)]) == set(words[:24])


def test_held_out_languages_only_in_the_held_out_split(samples):
  for split in ("train", "test"):
    assert not set(samples[split][0].task_languages) & set(HELD_OUT)
  held = samples["held_out"][0]
  assert set(held.task_languages) == set(LANGS)
  np.testing.assert_array_equal(held.is_evaluated,
                                [lang in HELD_OUT for lang in held.task_languages])
  # Held-out languages sit in the tree beside their meta-trained siblings (nl with de, en).
  subbranch = held.level_labels("subbranch")
  assert subbranch[held.task_languages.index("nl")] == subbranch[held.task_languages.index("de")]


def test_held_out_query_mean_is_the_mean_over_held_out_tasks(samples):
  held, _, query, _ = samples["held_out"]
  params = held.init_params(jax.random.key(0), embed_dim=4, hidden=8)
  weighted = jax.vmap(held.loss_fn, in_axes=(None, 0))(params, query)
  unit = query[:2] + (query[2] / jnp.maximum(query[2].sum((1, 2), keepdims=True), 1e-30),)
  per_task = jax.vmap(held.loss_fn, in_axes=(None, 0))(params, unit)
  np.testing.assert_allclose(weighted.mean(), per_task[held.is_evaluated].mean(), rtol=1e-5)
  assert (np.asarray(weighted)[~held.is_evaluated] == 0).all()


@pytest.mark.x64
def test_bits_per_char_matches_a_direct_float64_computation():
  tasks = make("train")
  support, _, _ = jax.jit(tasks.sample)(jax.random.key(5))
  batch = jax.tree.map(lambda a: a[0], support)
  params = tasks.init_params(jax.random.key(1), embed_dim=3, hidden=5)
  params = jax.tree.map(lambda p: p.astype(jnp.float64), params)
  assert batch[2].dtype == jnp.float64
  got = float(tasks.loss_fn(params, batch))
  p = jax.tree.map(np.asarray, params)
  contexts, targets, _ = map(np.asarray, batch)
  total_bits, num_chars = 0.0, 0
  for word_contexts, word_targets in zip(contexts, targets):
    for context, target in zip(word_contexts, word_targets):
      if target == ld.PAD:
        continue
      h = np.tanh(np.concatenate([p["embed"][c] for c in context]) @ p["hidden"]["w"]
                  + p["hidden"]["b"])
      logits = h @ p["out"]["w"] + p["out"]["b"]
      probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
      total_bits -= math.log2(probs[target])
      num_chars += 1
  assert num_chars == sum(len(ld.decode_word(t)) + 1 for t in targets)  # letters + END
  np.testing.assert_allclose(got, total_bits / num_chars, rtol=1e-12)


def test_treemaml_adapts_on_the_language_tree(samples):
  tasks, support, query, labels = samples["train"]
  theta = tasks.init_params(jax.random.key(0), embed_dim=4, hidden=8)
  learner = meta.TreeMAML(tasks.loss_fn, (0.5,) * tasks.num_steps)

  @jax.jit
  def run(theta, support, query, labels):
    return (learner.query_losses(theta, support, support, labels),
            jax.grad(learner.meta_loss)(theta, support, query, labels))

  losses, grads = run(theta, support, query, labels)
  assert losses.shape == (tasks.num_steps + 1,) and bool(jnp.all(jnp.isfinite(losses)))
  assert losses[-1] < losses[0]  # steps on the support loss lower the support loss
  assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(grads))


def test_real_wordfreq_task_family_default_sizes():
  tasks = ml.LanguageTasks("test", num_words=400, num_support=5, num_query=10)
  support, query, labels = jax.jit(tasks.sample)(jax.random.key(0))
  assert tasks.num_tasks == len(ld.LANGUAGES) - len(ml.DEFAULT_HELD_OUT) == 22
  assert support[0].shape == (22, 5, 13, 4) and query[1].shape == (22, 10, 13)
  assert labels.shape == (3, 22) and len(set(np.asarray(labels[0]).tolist())) == 5
  assert tasks.pool_size == 200


@pytest.mark.parametrize("kwargs,message", [
    (dict(split="dev"), r"Unknown split 'dev'.*'train', 'test', 'held_out'"),
    (dict(held_out=("sv",)), r"held_out languages \['sv'\] are not among languages"),
    (dict(held_out=LANGS), r"Every language is held out"),
    (dict(languages=("de", "xx")), r"Unknown language.*'xx'"),
    (dict(num_support=20), r"pool holds 12 words.*num_support \+ num_query = 24"),
    (dict(levels=("branch", "family")), r"levels must be distinct tree levels, coarse to fine"),
    (dict(num_steps=2), r"num_steps=2 must be >= len\(levels\)=4"),
    (dict(num_query=0), r"num_query must be a positive integer"),
    (dict(test_fraction=1.0), r"test_fraction must be in \(0, 1\)"),
    (dict(num_words=500), r"'de' has only .* words.*num_words=500"),
], ids=["split", "held_out_unknown", "all_held_out", "language", "too_many_shots", "levels",
        "num_steps", "num_query", "test_fraction", "too_few_words"])
def test_bad_arguments_are_named(kwargs, message):
  split = kwargs.pop("split", "train")
  with pytest.raises(ValueError, match=message):
    make(split, **kwargs)
