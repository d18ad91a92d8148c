"""Analysis tools: empirical NTK and its change, CKA, curvature spectra, weight drift.

Each works for any ``apply_fn(params, x)`` or any symmetric ``matvec(v)`` over a parameter
pytree, so it applies to RevMLP as to any other model, and to every product in
:mod:`gnrev.curvature`.
"""

from gnrev.analysis.cka import (MinibatchCKAState, center_gram, cka, feature_space_linear_cka,
                                gram_linear, gram_rbf, linear_cka, minibatch_cka_init,
                                minibatch_cka_result, minibatch_cka_update, rbf_cka)
from gnrev.analysis.ntk import (empirical_ntk, kernel_distance, kernel_velocity,
                                sketched_ntk_similarity)
from gnrev.analysis.spectra import (LanczosResult, QuadratureNodes, lanczos, spectral_density,
                                    stochastic_lanczos_quadrature, top_eigenvalues)
from gnrev.analysis.weights import WeightDrift, weight_drift, weight_drift_summary

__all__ = [
    "LanczosResult", "MinibatchCKAState", "QuadratureNodes", "WeightDrift", "center_gram",
    "cka", "empirical_ntk", "feature_space_linear_cka", "gram_linear", "gram_rbf",
    "kernel_distance", "kernel_velocity", "lanczos", "linear_cka", "minibatch_cka_init",
    "minibatch_cka_result", "minibatch_cka_update", "rbf_cka", "sketched_ntk_similarity",
    "spectral_density", "stochastic_lanczos_quadrature", "top_eigenvalues", "weight_drift",
    "weight_drift_summary",
]
