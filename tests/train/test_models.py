"""Model registry: RevMLP, MLP and CNN built from config fields."""

import jax
import jax.numpy as jnp
import ml_collections
import pytest

from gnrev import train


@pytest.mark.parametrize("fields,shape", [
    ({"name": "revmlp", "num_blocks": 1, "expansion": 8}, (2, 4, 4, 1)),
    ({"name": "mlp", "hidden": [8]}, (2, 4, 4, 1)),
    ({"name": "cnn", "features": [4]}, (2, 4, 4, 1)),
    ({"name": "cnn", "features": [4, 4]}, (2, 10, 1)),
])
def test_models_map_a_batch_to_logits(fields, shape):
  model = train.build_model(ml_collections.ConfigDict(fields), num_classes=3)
  x = jnp.ones(shape)
  assert model.apply(model.init(jax.random.key(0), x), x).shape == (2, 3)


def test_bad_model_name_fields_and_inputs_are_reported():
  with pytest.raises(ValueError, match="Unknown model 'vit'; allowed: autoencoder, cnn, edge_mlp, gnn, logreg, mlp, revmlp"):
    train.build_model(ml_collections.ConfigDict({"name": "vit"}), 3)
  with pytest.raises(TypeError, match="Bad fields \\['depth'\\] for model 'mlp'"):
    train.build_model(ml_collections.ConfigDict({"name": "mlp", "depth": 3}), 3)
  with pytest.raises(ValueError, match="CNN needs inputs with spatial axes"):
    train.CNN(num_classes=3).init(jax.random.key(0), jnp.ones((2, 5)))

