"""Return-prediction metrics against hand-computed values."""

import math

import numpy as np
import pytest

from gnrev import graphs

# Predicted positive where logit > 0: predictions 1 1 0 0 1 0, labels 1 0 1 0 1 1
# -> TP = 2, FP = 1, FN = 2.
LOGITS = np.array([2.0, 0.5, -1.0, -3.0, 1e-3, 0.0], np.float32)
LABELS = np.array([1, 0, 1, 0, 1, 1], np.int32)


def test_precision_recall_f1_match_hand_counts():
  metrics = graphs.binary_classification_metrics(LOGITS, LABELS)
  assert float(metrics["precision"]) == pytest.approx(2 / 3)
  assert float(metrics["recall"]) == pytest.approx(2 / 4)
  assert float(metrics["f1"]) == pytest.approx(2 * (2 / 3) * (1 / 2) / (2 / 3 + 1 / 2))


@pytest.mark.x64
def test_cross_entropy_matches_the_probability_formula():
  p = 1 / (1 + np.exp(-LOGITS.astype(np.float64)))
  expected = -np.mean(LABELS * np.log(p) + (1 - LABELS) * np.log(1 - p))
  got = graphs.binary_cross_entropy(LOGITS.astype(np.float64), LABELS)
  assert float(got) == pytest.approx(expected, rel=1e-12)
  # A coin flip costs log 2 nats per example.
  assert float(graphs.binary_cross_entropy(np.zeros(4), LABELS[:4])) == pytest.approx(math.log(2))


def test_cross_entropy_stays_finite_for_confident_mistakes():
  value = float(graphs.binary_cross_entropy(np.array([-200.0, 200.0]), np.array([1, 0])))
  assert value == pytest.approx(200.0)


def test_scores_are_zero_without_predicted_or_actual_positives():
  no_predictions = graphs.binary_classification_metrics(-np.ones(3), np.array([1, 0, 1]))
  assert float(no_predictions["precision"]) == 0 and float(no_predictions["f1"]) == 0
  assert float(graphs.recall(np.ones(3), np.zeros(3, np.int32))) == 0


def test_mismatched_shapes_are_rejected():
  with pytest.raises(ValueError, match=r"shape \(n,\)"):
    graphs.binary_classification_metrics(np.zeros(3), np.zeros(4))
