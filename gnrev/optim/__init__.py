"""Optimizers as optax transforms: FishLeg (learned inverse Fisher)."""

from gnrev.optim.fishleg import (PROBES, ScaleByFishLegState, default_aux_optimizer, fishleg,
                                 fishleg_aux_due, fishleg_aux_loss_and_gradient,
                                 fishleg_diagonal, fishleg_fitted_scale, fishleg_official,
                                 fishleg_q_vector, fishleg_set_lam, fishleg_warm_start,
                                 scale_by_factor_geometry, scale_by_fishleg)
from gnrev.optim.per_example import value_grad_and_per_example
from gnrev.optim.q_blocks import (MAX_KRONECKER_SIDE, Q_FAMILIES, DiagonalBlock, FullBlock,
                                  KroneckerBlock, PerExample, QStructure, q_family_of,
                                  q_structure)

__all__ = [
    "MAX_KRONECKER_SIDE", "PROBES", "Q_FAMILIES", "DiagonalBlock", "FullBlock", "KroneckerBlock",
    "PerExample", "QStructure", "ScaleByFishLegState", "default_aux_optimizer", "fishleg",
    "fishleg_aux_due", "fishleg_aux_loss_and_gradient", "fishleg_diagonal",
    "fishleg_fitted_scale", "fishleg_official", "fishleg_q_vector", "fishleg_set_lam",
    "fishleg_warm_start", "q_family_of", "q_structure", "scale_by_factor_geometry", "scale_by_fishleg",
    "value_grad_and_per_example",
]
