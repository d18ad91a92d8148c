"""Curvature shared by every wing: Jacobian products, likelihoods, GGN/Fisher/Hessian products."""

from gnrev.curvature.jacobian import (dense_jacobian, gram_vector_product, linearize_output,
                                      output_jvp, output_vjp)
from gnrev.curvature.likelihoods import (LIKELIHOODS, Likelihood, bernoulli, categorical,
                                         gaussian, get_likelihood)
from gnrev.curvature.precision import (EXACT_PRECISION, PRECISIONS, PrecisionLike,
                                       check_precision, matmul_precision)
from gnrev.curvature.products import (ggn_vector_product, hessian_vector_product,
                                      sampled_fisher_vector_product)

__all__ = [
    "EXACT_PRECISION", "LIKELIHOODS", "Likelihood", "PRECISIONS", "PrecisionLike", "bernoulli", "categorical",
    "check_precision", "dense_jacobian", "gaussian", "get_likelihood", "ggn_vector_product",
    "gram_vector_product", "hessian_vector_product", "linearize_output", "matmul_precision",
    "output_jvp", "output_vjp", "sampled_fisher_vector_product",
]
