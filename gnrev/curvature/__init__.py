"""Curvature shared by every wing: likelihoods and matrix-free GGN/Fisher/Hessian products."""

from gnrev.curvature.likelihoods import (LIKELIHOODS, Likelihood, bernoulli, categorical,
                                         gaussian, get_likelihood)
from gnrev.curvature.products import (ggn_vector_product, hessian_vector_product,
                                      sampled_fisher_vector_product)

__all__ = [
    "LIKELIHOODS", "Likelihood", "bernoulli", "categorical", "gaussian", "get_likelihood",
    "ggn_vector_product", "hessian_vector_product", "sampled_fisher_vector_product",
]
