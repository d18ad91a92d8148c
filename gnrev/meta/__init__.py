"""TreeMAML: MAML whose inner steps pool task gradients down a task tree, and the clustering
that learns the tree (Garcia et al., arXiv 2103.04691; docs: docs/meta.md)."""

from gnrev.meta.clustering import (adjusted_rand_indices, average_linkage_labels, cluster_tasks,
                                   cosine_similarity, otd_labels, threshold_labels)
from gnrev.meta.languages import LanguageTasks, bits_per_char, char_mlp_init, char_mlp_logits
from gnrev.meta.pooling import (TreePoolState, check_labels, nest_labels, pool_by_labels,
                                singleton_labels, tree_pool)
from gnrev.meta.tasks import (HierarchicalRegression, init_regression_params, linear_loss, mlp_loss,
                              tree_labels)
from gnrev.meta.treemaml import TreeMAML

__all__ = [
    "HierarchicalRegression", "TreeMAML", "TreePoolState", "adjusted_rand_indices",
    "average_linkage_labels", "check_labels", "init_regression_params", "linear_loss", "mlp_loss",
    "cluster_tasks", "cosine_similarity", "nest_labels", "otd_labels", "pool_by_labels",
    "singleton_labels", "threshold_labels", "tree_labels", "tree_pool",
    "LanguageTasks", "bits_per_char", "char_mlp_init", "char_mlp_logits",
]
