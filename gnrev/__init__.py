"""gnrev: second-order and meta-learning research in JAX.

Subpackages (import the ones you need): at the bottom ``gnrev.nets``, ``gnrev.curvature`` and
``gnrev.data``; the wings ``gnrev.gn``, ``gnrev.optim``, ``gnrev.meta``, ``gnrev.prune``,
``gnrev.analysis`` and ``gnrev.graphs``; on top the trainer ``gnrev.train``.
``from gnrev import nets, gn`` imports them as subpackages.
"""

__version__ = "0.1.0"
