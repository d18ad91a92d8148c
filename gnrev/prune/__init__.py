"""Second-order pruning: FishLeg Surgeon and OBS / magnitude baselines on one API."""

from gnrev.prune.masks import (RANKINGS, KeepMaskedState, apply_masks, cubic_sparsity_schedule,
                               dense_masks, keep_masked, prunable, replace_masks, select_masks,
                               sparsity)
from gnrev.prune.surgeon import (InverseFisher, SurgeonState, diagonal_fisher_inverse,
                                 exact_inverse_fisher, fishleg_inverse, fishleg_surgeon,
                                 gradual_pruning, init_surgeon, magnitude_inverse,
                                 masked_q_vector, mean_squared_gradients, obs_prune, obs_scores,
                                 q_refiner, refine_q, squared_gradient_sum, surgeon_step)

__all__ = [
    "InverseFisher", "KeepMaskedState", "RANKINGS", "SurgeonState", "apply_masks",
    "cubic_sparsity_schedule", "dense_masks", "diagonal_fisher_inverse", "exact_inverse_fisher",
    "fishleg_inverse", "fishleg_surgeon", "gradual_pruning", "init_surgeon", "keep_masked",
    "magnitude_inverse", "masked_q_vector", "mean_squared_gradients", "obs_prune", "obs_scores",
    "prunable", "q_refiner", "refine_q", "replace_masks", "select_masks", "sparsity",
    "squared_gradient_sum", "surgeon_step",
]
