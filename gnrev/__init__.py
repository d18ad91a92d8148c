"""gnrev: second-order and meta-learning research in JAX.

Wings (import the ones you need): ``gnrev.nets``, ``gnrev.gn``, ``gnrev.optim``,
``gnrev.meta``, ``gnrev.prune``, ``gnrev.analysis``, ``gnrev.curvature``, ``gnrev.data``,
``gnrev.train``. ``from gnrev import nets, gn`` imports them as subpackages.
"""

__version__ = "0.1.0"
