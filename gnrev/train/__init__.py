"""Experiment launcher: training loop, registries, checkpoints, metrics, plots, sharding."""

from gnrev.train.checkpoint import checkpoint_steps, load_params
from gnrev.train.configs import load_config, parse_arg, shrink_for_smoke
from gnrev.train.loop import (check_config, evaluate, load_data, make_eval_step,
                              make_train_step, train_and_evaluate, train_run)
from gnrev.train.metrics import plot_curves, read_metrics, save_plots
from gnrev.train.models import CNN, MLP, MODELS, build_model, cross_entropy
from gnrev.train.optimizers import (OPTIMIZERS, OPTIONS, OptimizerSetup, build_optimizer,
                                    fisher_vector_product, optimizer_options)
from gnrev.train.sharding import make_mesh

__all__ = [
    "CNN", "MLP", "MODELS", "OPTIMIZERS", "OPTIONS", "OptimizerSetup", "build_model",
    "build_optimizer", "check_config", "checkpoint_steps", "cross_entropy", "evaluate",
    "fisher_vector_product", "load_config", "load_data", "load_params", "make_eval_step",
    "make_mesh", "make_train_step", "optimizer_options", "parse_arg", "plot_curves",
    "read_metrics", "save_plots", "shrink_for_smoke", "train_and_evaluate", "train_run",
]
