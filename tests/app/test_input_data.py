"""A recipe's model.inputs feed the data pipeline: one array per input with its dtype,
drawn in its values range, then the label."""
import numpy as np
import pytest

from slim_callbacks.app.data import build_datasets
from slim_callbacks.app.input_data import SyntheticInputs
from slim_callbacks.app.schema import Recipe
from slim_callbacks.core.errors import ConfigError

INPUTS = [{"name": "ids", "shape": [1, 6], "dtype": "int64", "values": [3, 7]},
          {"name": "types", "shape": [1, 6], "dtype": "int32", "values": [0, 2]},
          {"name": "scale", "shape": [1, 2], "dtype": "float32", "values": [0.5, 2.0]},
          {"name": "image", "shape": [1, 3, 4, 4]}]
RECIPE = {"name": "t", "model": {"name": "lenet", "inputs": INPUTS}, "data": {"source": "synthetic"}}


def test_items_hold_every_input_with_its_dtype_and_range_then_the_label():
    recipe = Recipe(**RECIPE)
    train, evaluation = build_datasets(recipe.data, recipe.input_shape, recipe.model.inputs)
    items = [train[i] for i in range(len(train))]
    ids, types, scale, image = (np.stack([item[k] for item in items]) for k in range(4))
    labels = np.concatenate([item[4] for item in items])
    assert (ids.shape[1:], ids.dtype, ids.min(), ids.max()) == ((6,), np.int64, 3, 6)
    assert (types.dtype, set(types.ravel().tolist())) == (np.int32, {0, 1})
    assert scale.dtype == np.float32 and 0.5 <= scale.min() and scale.max() < 2.0
    assert image.shape[1:] == (3, 4, 4) and abs(image.mean()) < 0.2 and 0.8 < image.std() < 1.2
    assert labels.dtype == np.int64 and set(labels.tolist()) <= set(range(10))
    assert len(evaluation) < len(train)
    assert not np.array_equal(evaluation[0][0], train[0][0])


def test_an_item_is_the_same_on_every_call_and_integers_without_values_are_zeros():
    data = SyntheticInputs(3, [{"shape": [1, 4], "dtype": "int64"}, {"shape": [1, 2]}])
    first, again = data[2], data[2]
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert not first[0].any() and first[1].any()


def test_the_engine_gets_the_inputs_without_their_values():
    recipe = Recipe(**RECIPE)
    assert recipe.example_inputs[0] == {"name": "ids", "shape": [1, 6], "dtype": "int64"}
    assert recipe.to_dict()["model"]["inputs"][0]["values"] == [3, 7]
    assert Recipe.from_dict(recipe.to_dict()) == recipe


@pytest.mark.parametrize("entry, message", [
    ({"name": "ids", "shape": [1, 6], "dtype": "int64", "values": [0.5, 9]},
     r"^model.inputs\[0\].values: \[0.5, 9\] .*two ints with low < high"),
    ({"name": "ids", "shape": [1, 6], "dtype": "int64", "values": [5, 5]}, r"low < high"),
    ({"name": "x", "shape": [1, 6], "values": [0, "1"]}, r"two numbers with low < high"),
    ({"name": "x", "shape": [1, 6], "values": 3}, r"^model.inputs\[0\].values: 3 "),
])
def test_bad_values_are_config_errors(entry, message):
    with pytest.raises(ConfigError, match=message):
        Recipe(**{**RECIPE, "model": {"name": "lenet", "inputs": [entry]}})


def test_image_sources_cannot_feed_model_inputs():
    with pytest.raises(ConfigError, match=r"^data.source: 'digits' .*synthetic when model.inputs is given"):
        Recipe(**{**RECIPE, "data": {"source": "digits"}})
