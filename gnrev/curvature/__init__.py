"""Matrix-free curvature products shared by the wings."""

from gnrev.curvature.jacobian import (dense_jacobian, gram_vector_product, linearize_output,
                                      output_jvp, output_vjp)

__all__ = ["dense_jacobian", "gram_vector_product", "linearize_output", "output_jvp",
           "output_vjp"]
