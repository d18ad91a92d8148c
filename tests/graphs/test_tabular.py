"""Tabular baselines: per-event feature table and the logistic regression / MLP classifiers."""

import jax
import numpy as np
import pytest

from gnrev import graphs
from gnrev.data.graph_returns import synthetic_graph_returns


def test_tabular_features_concatenate_the_event_endpoints_and_event():
  data = synthetic_graph_returns(0, num_customers=10, num_variants=4)
  events = np.array([3, 0, 7])
  x = graphs.tabular_features(data, events)
  assert x.shape == (3, 4 + 4 + 3) and x.dtype == np.float32
  for row, e in zip(x, events):
    np.testing.assert_array_equal(row, np.concatenate([
        data.customer_features[data.customer[e]], data.variant_features[data.variant[e]],
        data.event_features[e]]))


@pytest.mark.x64
def test_logistic_regression_is_affine_in_the_features():
  x = np.random.default_rng(0).normal(size=(6, 5))
  model = graphs.logistic_regression(param_dtype=np.float64)
  variables = model.init(jax.random.key(0), x)
  layer = variables["params"]["Dense_0"]
  np.testing.assert_allclose(model.apply(variables, x), x @ layer["kernel"][:, 0] + layer["bias"],
                             rtol=1e-13)
  assert sum(p.size for p in jax.tree.leaves(variables)) == 5 + 1


def test_mlp_classifier_gives_one_logit_per_example_and_rejects_other_ranks():
  model = graphs.MLPClassifier(hidden_sizes=(8, 4))
  x = np.ones((3, 5), np.float32)
  variables = model.init(jax.random.key(0), x)
  assert model.apply(variables, x).shape == (3,)
  with pytest.raises(ValueError, match=r"shape \(n, d\)"):
    model.apply(variables, x[0])
