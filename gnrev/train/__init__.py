"""Experiment launcher: tasks, training loop, registries, checkpoints, metrics, plots, sharding."""

from gnrev.train.checkpoint import checkpoint_steps, load_params
from gnrev.train.configs import load_config, parse_arg, select_runs, shrink_for_smoke
from gnrev.train.loop import (check_config, evaluate, load_data, load_splits, make_eval_step,
                              make_train_step, run_program, split_validation,
                              supervised_program, train_and_evaluate, train_run)
from gnrev.train.meta_task import MetaLearningTask
from gnrev.train.metrics import plot_curves, read_metrics, save_plots
from gnrev.train.models import CNN, MLP, MODELS, Autoencoder, build_model, cross_entropy
from gnrev.train.optimizers import (OPTIMIZERS, OPTIONS, Optimizer, OptimizerSetup,
                                    build_optimizer, check_optimizer, fisher_vector_product,
                                    optimizer_options)
from gnrev.train.sharding import make_mesh
from gnrev.train.state import BestState, Program, TrainState, keep_if_finite
from gnrev.train.tasks import (TASKS, SupervisedTask, build_task, classification,
                               edge_classification, reconstruction, task_options)

__all__ = [
    "Autoencoder", "BestState", "CNN", "MLP", "MODELS", "MetaLearningTask", "OPTIMIZERS", "OPTIONS",
    "Optimizer", "OptimizerSetup", "Program", "SupervisedTask", "TASKS", "TrainState",
    "build_model", "build_optimizer", "build_task", "check_config", "check_optimizer",
    "checkpoint_steps", "classification", "cross_entropy", "edge_classification", "evaluate",
    "fisher_vector_product", "keep_if_finite", "load_config", "load_data", "load_params",
    "load_splits", "make_eval_step", "make_mesh", "make_train_step", "optimizer_options",
    "parse_arg", "plot_curves", "read_metrics", "reconstruction", "run_program", "save_plots",
    "select_runs", "shrink_for_smoke", "split_validation", "supervised_program", "task_options",
    "train_and_evaluate", "train_run",
]
