"""Gauss-Newton steps: the exact tractable GN of reversible nets, and a min-norm GN for any model."""

from gnrev.gn.min_norm import dense_gn_direction, min_norm_gn_direction
from gnrev.gn.sweep import ALLOCATIONS, SOLVERS, allocation_weights, exact_gn_direction
from gnrev.gn.targets import LOSSES, loss_value, newton_target, pinv_hessian_gradient
from gnrev.gn.transforms import (GNState, exact_gn, gauss_newton, scale_by_exact_gn,
                                 scale_by_gauss_newton)

__all__ = [
    "ALLOCATIONS", "GNState", "LOSSES", "SOLVERS", "allocation_weights", "dense_gn_direction",
    "exact_gn", "exact_gn_direction", "gauss_newton", "loss_value", "min_norm_gn_direction",
    "newton_target", "pinv_hessian_gradient", "scale_by_exact_gn", "scale_by_gauss_newton",
]
