"""Reversible coupling networks: flax modules and the pure block functions behind them; and the
non-reversible baselines (MLP, CNN, Autoencoder) they are compared with."""

from gnrev.nets.baselines import AUTOENCODER_INITS, CNN, MLP, Autoencoder

from gnrev.nets.coupling import (ACTIVATIONS, branch, branch_hidden, branch_output,
                                 branch_weights_from_omega, coupling_block, coupling_inverse,
                                 feature_matrix)
from gnrev.nets.reversible import (MEMORY_MODES, reversible_stack, stack_forward,
                                   stack_inverse)
from gnrev.nets.revmlp import RevMLP, flatten_inputs, split_sizes

__all__ = [
    "ACTIVATIONS", "AUTOENCODER_INITS", "Autoencoder", "CNN", "MEMORY_MODES", "MLP", "RevMLP",
    "branch", "branch_hidden", "branch_output",
    "branch_weights_from_omega", "coupling_block", "coupling_inverse", "feature_matrix",
    "flatten_inputs", "reversible_stack", "split_sizes", "stack_forward", "stack_inverse",
]
