"""Optimizers as optax transforms: FishLeg (learned inverse Fisher)."""

from gnrev.optim.fishleg import (PROBES, ScaleByFishLegState, fishleg,
                                 fishleg_aux_loss_and_gradient, fishleg_diagonal,
                                 fishleg_q_vector, fishleg_set_lam, fishleg_warm_start,
                                 scale_by_fishleg)
from gnrev.optim.q_blocks import (Q_FAMILIES, DiagonalBlock, FullBlock, KroneckerBlock,
                                  QStructure, q_family_of, q_structure)

__all__ = [
    "PROBES", "Q_FAMILIES", "DiagonalBlock", "FullBlock", "KroneckerBlock", "QStructure",
    "ScaleByFishLegState", "fishleg", "fishleg_aux_loss_and_gradient", "fishleg_diagonal",
    "fishleg_q_vector", "fishleg_set_lam", "fishleg_warm_start", "q_family_of", "q_structure",
    "scale_by_fishleg",
]
