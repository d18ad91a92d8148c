import jax
import numpy as np
import pytest

from gnrev import analysis


def _params(seed):
  k1, k2 = jax.random.split(jax.random.key(seed))
  return {"block_0": {"F": {"W": jax.random.normal(k1, (3, 4)),
                            "b": jax.random.normal(k2, (3,))}}}


def test_per_tensor_drift_matches_numpy_norms_and_cosines():
  initial, trained = _params(0), _params(1)
  drift = analysis.weight_drift(trained, initial)
  for name in ("W", "b"):
    w0 = np.asarray(initial["block_0"]["F"][name]).ravel()
    wt = np.asarray(trained["block_0"]["F"][name]).ravel()
    np.testing.assert_allclose(drift.norm_ratio["block_0"]["F"][name],
                               np.linalg.norm(wt) / np.linalg.norm(w0), rtol=1e-5)
    np.testing.assert_allclose(drift.cosine["block_0"]["F"][name],
                               w0 @ wt / (np.linalg.norm(w0) * np.linalg.norm(wt)), rtol=1e-5)


def test_scaled_weights_give_the_scale_as_ratio_and_its_sign_as_cosine():
  initial = _params(0)
  drift = analysis.weight_drift(jax.tree.map(lambda w: -2.0 * w, initial), initial)
  for leaf in jax.tree.leaves(drift.norm_ratio):
    np.testing.assert_allclose(leaf, 2.0, rtol=1e-6)
  for leaf in jax.tree.leaves(drift.cosine):
    np.testing.assert_allclose(leaf, -1.0, rtol=1e-6)


def test_summary_names_every_tensor_and_the_global_drift():
  initial, trained = _params(0), _params(1)
  summary = analysis.weight_drift_summary(trained, initial)
  assert sorted(summary) == sorted(f"{field}/{path}" for field in ("norm_ratio", "cosine")
                                   for path in ("block_0/F/W", "block_0/F/b", "global"))
  flat0 = np.concatenate([np.ravel(w) for w in jax.tree.leaves(initial)])
  flatt = np.concatenate([np.ravel(w) for w in jax.tree.leaves(trained)])
  np.testing.assert_allclose(summary["norm_ratio/global"],
                             np.linalg.norm(flatt) / np.linalg.norm(flat0), rtol=1e-5)
  np.testing.assert_allclose(summary["cosine/global"], flat0 @ flatt / (
      np.linalg.norm(flat0) * np.linalg.norm(flatt)), rtol=1e-5)


def test_mismatched_parameter_trees_are_rejected():
  initial = _params(0)
  with pytest.raises(ValueError, match="structure"):
    analysis.weight_drift({"other": initial["block_0"]}, initial)
  reshaped = jax.tree.map(lambda w: w.reshape(-1), initial)
  with pytest.raises(ValueError, match="shapes differ"):
    analysis.weight_drift(reshaped, jax.tree.map(lambda w: w[..., :1], initial))
