"""Return prediction through the launcher: one model on the purchase graph, Adam vs FishLeg.

Task ``edge_classification``. Each example is a purchase event, a row ``[customer index,
variant index, event features]``;
the label is whether it was returned (class 1). The message graph (node features, unlabelled
message edges over all events) is the model's non-trained ``graph`` variable collection: it is
replicated over the devices and passed to every jitted step as an argument. Test metrics on the
held-out events: ``test_loss`` (binary cross-entropy), ``test_precision``, ``test_recall``,
``test_f1`` (class 1) and ``test_accuracy``. Data: the synthetic graph of
:func:`gnrev.data.graph_returns.synthetic_graph_returns` (``config.data.options``), or the
GraphReturns CSV files with ``--config.data.options.source=files`` and ``--config.data.data_dir``
(or its ``graph_returns/``) holding them.

Run (one model per command; ``model=gnn`` (default), ``edge_mlp`` or ``logreg``; 20 s, 10 s,
7 s for all its optimizers on 2 shared CPU cores):

  python -m gnrev.main --config=configs/graph_returns_launcher.py:model=gnn \\
      --workdir=runs/graph_returns_gnn

Runs ``adam`` and ``fishleg`` (settings of ``configs/graph_returns.py``, picked there on seed 0's
validation split); ``edge_mlp`` adds ``gauss_newton``: its system has batch x 2 unknowns, fewer
than the MLP's 4,993 parameters (logistic regression has 12; on the GNN each CG iteration runs
over the whole graph). Smoke run (seconds): ``:smoke`` (combine as ``:smoke,model=edge_mlp``).
Artefacts in the workdir: config.json, metrics.jsonl, curves.png (with precision / recall / F1
panels), <run>/checkpoints/. Measured (synthetic graph, seed 0, 20 epochs, test F1 / BCE):
gnn adam 0.667 / 0.578, fishleg 0.665 / 0.586; edge_mlp adam 0.561 / 0.672, fishleg
0.574 / 0.679, gauss_newton 0.524 / 0.664; logreg adam 0.403 / 0.690. For several seeds,
early stopping on a validation split and the GNN-vs-per-event table use
``configs/graph_returns.py`` and ``experiments/graph_returns.py``.
"""

import ml_collections

from gnrev.train import parse_arg, shrink_for_smoke

LAUNCHER = True

MODELS = {
    "gnn": {"hidden_size": 32, "num_rounds": 2, "edge_hidden_sizes": (64,)},
    "edge_mlp": {"hidden_sizes": (64, 64)},
    "logreg": {},
}


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, model="gnn")
  if options.model not in MODELS:
    raise ValueError(f"Unknown model {options.model!r}; allowed: {', '.join(MODELS)}.")
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.task = ml_collections.ConfigDict({"name": "edge_classification"})
  config.num_epochs = 20
  config.eval_every = 0            # steps between test evaluations; 0: once per epoch
  config.log_every = 1
  config.checkpoint_every = 50
  config.max_to_keep = 2
  config.num_devices = 0

  config.data = ml_collections.ConfigDict()
  config.data.name = "graph_returns"
  config.data.data_dir = ""        # GraphReturns CSVs, read with options.source = "files"
  config.data.batch_size = 512     # training events per step
  config.data.eval_batch_size = 1024
  config.data.train_subset = 0
  config.data.seed = 0             # shuffling
  config.data.options = ml_collections.ConfigDict(
      {"source": "synthetic", "seed": 0, "fractions": (0.8, 0.1, 0.1), "num_customers": 1000,
       "num_variants": 300, "events_per_customer": 8.0, "feature_noise": 1.0})

  config.model = ml_collections.ConfigDict({"name": options.model, **MODELS[options.model]})
  config.optimizers = ml_collections.ConfigDict({
      "adam": {"name": "adam", "learning_rate": 3e-3},
      "fishleg": {"name": "fishleg", "learning_rate": 0.1, "damping": 0.1,
                  "aux_learning_rate": 1e-2, "update_aux_every": 10, "momentum": 0.9,
                  "init_scale": 1.0, "max_newton_steps": None},
  })
  if options.model == "edge_mlp":
    config.optimizers.gauss_newton = {"name": "gauss_newton", "learning_rate": 0.1,
                                      "loss": "ce_identity", "damping": 100.0, "maxiter": 10}
  if options.smoke:
    shrink_for_smoke(config)
    # One device: compiling the GNN for an 8-device mesh doubles the smoke run's time; the
    # graph's replication over a mesh is tested in tests/graphs/test_events.py.
    config.num_devices = 1
    config.data.options.num_customers = 100
    config.data.options.num_variants = 40
    if options.model == "gnn":
      config.model.update(hidden_size=8, num_rounds=1, edge_hidden_sizes=(8,))
  return config
