"""Return prediction on the purchase graph: GNN vs MLP vs logistic regression, Adam vs FishLeg.

Reproduces the form of McGowan et al.'s Table 2 (arXiv 2302.14096): precision, recall, F1 and
cross-entropy on held-out events, mean and spread over seeds, for a message-passing GNN and two
per-event models; and compares FishLeg with Adam on the GNN (steps and seconds to the same
validation loss). Each seed draws its own synthetic graph, event split and initialisation.
When ``data.data_dir`` holds the GraphReturns CSV files (see
:func:`gnrev.data.graph_returns.load_graph_returns`) the real graph is run as well.

Run (about 5 minutes on 2 CPU cores):

  python experiments/graph_returns.py --config=configs/graph_returns.py --workdir=/tmp/graph_returns

One model only: ``--config=configs/graph_returns.py:model=gnn`` (``gnn``, ``mlp``, ``logreg``);
smoke run (seconds): ``:smoke`` (combine as ``:smoke,model=mlp``). Outputs in the workdir:
``graph_returns.json`` (table, FishLeg-vs-Adam summary, curves) and ``graph_returns.png``.

Runs are ``"<model>/<optimizer>"`` with optimizers from :data:`gnrev.train.OPTIMIZERS`.
Settings were picked on seed 0's validation split from a few trials each: on the GNN, Adam lr
{1e-3, 3e-3, 1e-2} and FishLeg (damping, aux lr) (0.1, 1e-3) at lr {0.01, 0.03, 0.1, 0.3},
plus (1, 1e-3) and (0.1, 1e-2) at lr 0.1; on the MLP, Gauss-Newton loss ``ce`` (lr, damping)
(0.3, 1), (0.1, 1), (0.3, 10) and ``ce_identity`` (1, 1), (0.1, 1), (0.1, 0.01), (0.01, 1),
(0.01, 100), (0.1, 100) -- all but the last two diverge. Every run keeps the parameters of its
best validation cross-entropy (early stopping) and reports the test scores of those.
"""

import ml_collections

from gnrev.train import parse_arg

MODELS = ("logreg", "mlp", "gnn")


def get_config(arg=None):
  options = parse_arg(arg, smoke=False, model="all")
  if options.model not in (*MODELS, "all"):
    raise ValueError(f"Unknown model {options.model!r}; allowed: {', '.join(MODELS)}, all.")
  config = ml_collections.ConfigDict()
  config.seeds = (0, 1, 2)
  config.num_steps = 600
  config.batch_size = 512          # training events per step
  config.eval_every = 20           # steps between validation evaluations
  config.patience = 10             # evaluations without a better validation loss before stopping

  config.data = ml_collections.ConfigDict()
  config.data.data_dir = ""        # GraphReturns CSVs; empty or missing files: synthetic only
  config.data.fractions = (0.8, 0.1, 0.1)
  config.data.synthetic = ml_collections.ConfigDict(
      {"num_customers": 1000, "num_variants": 300, "events_per_customer": 8.0,
       "feature_noise": 1.0})

  config.models = ml_collections.ConfigDict({
      "logreg": {"hidden_sizes": ()},
      "mlp": {"hidden_sizes": (64, 64)},
      "gnn": {"hidden_size": 32, "num_rounds": 2, "edge_hidden_sizes": (64,)},
  })
  config.optimizers = ml_collections.ConfigDict({
      "adam": {"name": "adam", "learning_rate": 3e-3},
      "fishleg": {"name": "fishleg", "learning_rate": 0.1, "damping": 0.1,
                  "aux_learning_rate": 1e-2, "update_aux_every": 10, "momentum": 0.9},
      # Min-norm GN realises its output-space target on the batch; only heavy damping keeps it
      # from fitting each batch of 512 events at once (undamped steps diverge at lr 0.01).
      "gauss_newton": {"name": "gauss_newton", "learning_rate": 0.1, "loss": "ce_identity",
                       "damping": 100.0, "maxiter": 10},
  })
  # Gauss-Newton's system has batch x 2 unknowns: run where that is below the parameter count
  # (the MLP's 4,993; logistic regression has 12 parameters, and the GNN's 10 CG iterations
  # over the whole graph per step cost more than this budget).
  config.runs = ("logreg/adam", "mlp/adam", "mlp/gauss_newton", "gnn/adam", "gnn/fishleg")
  if options.model != "all":
    config.runs = tuple(r for r in config.runs if r.split("/")[0] == options.model)
  if options.smoke:
    config.seeds = (0,)
    config.num_steps = 20
    config.eval_every = 10
    config.batch_size = 64
    config.data.synthetic.num_customers = 100
    config.data.synthetic.num_variants = 40
  return config
