"""Graph wing: return prediction on the customer-variant purchase graph (ASOS GraphReturns).

A message-passing GNN for edge classification (:class:`BipartiteGNN` over a
:class:`MessageGraph`), per-event tabular baselines (:func:`logistic_regression`,
:class:`MLPClassifier`) and the metrics of McGowan et al. (arXiv 2302.14096). The data come
from :mod:`gnrev.data.graph_returns`.
"""

from gnrev.graphs.events import (GRAPH, EventClassifier, TwoClassLogits, event_inputs,
                                  gnn_classifier, graph_variables, logreg_classifier,
                                  mlp_classifier, two_class_logits)
from gnrev.graphs.gnn import BipartiteGNN, MessageGraph, message_graph, segment_mean
from gnrev.graphs.metrics import (binary_classification_metrics, binary_cross_entropy, f1_score,
                                  precision, recall)
from gnrev.graphs.tabular import MLPClassifier, logistic_regression, tabular_features

__all__ = [
    "GRAPH", "BipartiteGNN", "EventClassifier", "MLPClassifier", "MessageGraph",
    "TwoClassLogits", "binary_classification_metrics", "binary_cross_entropy", "event_inputs",
    "f1_score", "gnn_classifier", "graph_variables", "logistic_regression", "logreg_classifier",
    "message_graph", "mlp_classifier", "precision", "recall", "segment_mean", "tabular_features",
    "two_class_logits",
]
