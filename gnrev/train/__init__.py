"""Experiment launcher: tasks, training loop, registries, checkpoints, metrics, plots, sharding."""

from gnrev.nets import CNN, MLP, Autoencoder  # noqa: F401  (documented in gnrev.nets)
from gnrev.train.checkpoint import checkpoint_steps, load_params
from gnrev.train.configs import ConfigError, load_config
from gnrev.train.loop import check_config, load_splits, run_program, train_and_evaluate
from gnrev.train.meta_task import MetaLearningTask
from gnrev.train.metrics import plot_curves, read_metrics, save_plots
from gnrev.train.models import MODELS, build_model, cross_entropy
from gnrev.train.optimizers import (OPTIMIZERS, OPTIONS, Optimizer, OptimizerSetup,
                                    build_optimizer, check_optimizer, fisher_vector_product,
                                    optimizer_options)
from gnrev.train.sharding import make_mesh
from gnrev.train.state import BestState, Program, TrainState, keep_if_finite
from gnrev.train.supervised import (SupervisedTask, classification, edge_classification,
                                    evaluate, load_data, make_eval_step, make_train_step,
                                    reconstruction, split_validation, supervised_program)
from gnrev.train.tasks import TASKS, Task, build_task, task_options

__all__ = [
    "BestState", "ConfigError", "MODELS", "MetaLearningTask",
    "OPTIMIZERS", "OPTIONS", "Optimizer", "OptimizerSetup", "Program", "SupervisedTask", "TASKS",
    "Task", "TrainState", "build_model", "build_optimizer", "build_task", "check_config",
    "check_optimizer", "checkpoint_steps", "classification", "cross_entropy",
    "edge_classification", "evaluate", "fisher_vector_product", "keep_if_finite", "load_config",
    "load_data", "load_params", "load_splits", "make_eval_step", "make_mesh", "make_train_step",
    "optimizer_options", "plot_curves", "read_metrics", "reconstruction", "run_program",
    "save_plots", "split_validation", "supervised_program", "task_options",
    "train_and_evaluate",
]
