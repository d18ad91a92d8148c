"""experiments/treemaml_languages.py: the smoke run end to end through the launcher, and the
tree figure's helpers."""

import importlib.util
import json
import os

import numpy as np
import pytest

from gnrev import train

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _experiment():
  spec = importlib.util.spec_from_file_location(
      "treemaml_languages_experiment", os.path.join(REPO, "experiments", "treemaml_languages.py"))
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


tl = _experiment()


def test_smoke_run_trains_through_the_launcher_and_summarises_both_protocols(tmp_path):
  base = train.load_config(tl.CONFIG, "smoke")
  # Three of the five runs (each run compiles its own steps): no adaptation, the linguistic and
  # the learned tree; tests/test_main.py smoke-runs the config with all five.
  for run in ("maml", "fomaml"):
    del base.optimizers[run]
  summary = tl.run_experiment(base, str(tmp_path), shots_list=[2], seeds=[0], eval_batches=1)
  runs = summary["shots"]["2"]
  assert set(runs) == set(base.optimizers)
  num_steps = len(base.task.inner_lrs)
  for run, entry in runs.items():
    for protocol in tl.PROTOCOLS:
      losses = np.array(entry[protocol]["bits_per_char"])
      assert losses.shape == (num_steps + 1,) and np.isfinite(losses).all(), (run, protocol)
      assert 0 < losses[0] < np.log2(29) + 1  # near-uniform at a 3-step smoke run
      aris = entry[protocol]["ari_per_step"]
      assert set(aris) == set(tl.ARI_LEVELS)
      assert all(-1 <= a <= 1 for level in aris.values() for a in level)
  # No adaptation leaves the query loss unchanged; the linguistic tree's step 1 is the family.
  no_adapt = np.array(runs["no_adaptation"]["test"]["bits_per_char"])
  np.testing.assert_allclose(no_adapt, no_adapt[0], rtol=1e-6)
  assert runs["treemaml_linguistic"]["test"]["ari_per_step"]["family"][0] == 1.0
  assert runs["treemaml_linguistic"]["held_out"]["ari_per_step"]["branch"][1] == 1.0
  assert runs["no_adaptation"]["test"]["ari_per_step"]["family"][0] == 0.0  # singletons
  records = train.read_metrics(os.path.join(str(tmp_path), "shots_2", "seed_0"))
  assert {r["run"] for r in records} == set(base.optimizers)
  json.dumps(summary)  # the results file is plain JSON
  family = tl.protocol_families(tl.shot_config(base, 2, 0))["test"]
  path = os.path.join(str(tmp_path), "figure.png")
  tl.plot(summary, family.task_languages, family.labels, path)
  assert os.path.getsize(path) > 0
  assert "| 2 | treemaml_linguistic |" in tl.table(summary)
  # Launches of different shot sizes combine into one summary.
  for shots in ("2", "5"):
    os.makedirs(tmp_path / shots)
    with open(tmp_path / shots / "treemaml_languages.json", "w") as f:
      json.dump(dict(summary, shots={shots: runs}), f)
  combined = tl.combine([str(tmp_path / s / "treemaml_languages.json") for s in ("2", "5")])
  assert list(combined["shots"]) == ["2", "5"] and combined["seeds"] == [0]


def test_modal_tree_is_the_most_frequent_nested_schedule():
  a = np.array([[0, 0, 2, 2], [0, 1, 2, 2]])
  b = np.array([[0, 0, 0, 0], [0, 0, 2, 2]])
  used = np.stack([a, b, a])
  np.testing.assert_array_equal(tl.modal_tree(used), a)
  # A row that splits across the previous row's clusters is refined to nest in it.
  crossing = np.array([[[0, 0, 2, 2], [0, 1, 1, 3]]])
  np.testing.assert_array_equal(tl.modal_tree(crossing), [[0, 0, 2, 2], [0, 1, 2, 3]])


def test_launcher_refuses_an_unknown_family_or_a_model_the_family_does_not_fit():
  config = train.load_config(tl.CONFIG, "smoke")
  config.task.family.name = "klingon"
  with pytest.raises(ValueError, match=r"unknown family 'klingon'; allowed: .*languages"):
    train.tasks.build_task(config)
  config = train.load_config(tl.CONFIG, "smoke")
  config.task.model = "mlp"
  with pytest.raises(ValueError, match=r"family 'languages' needs model 'family', got 'mlp'"):
    train.tasks.build_task(config).load(config)
