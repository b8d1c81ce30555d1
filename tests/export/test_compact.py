"""to_tflite / bundle with compact=True: narrower files checked against the SmartModel, and smart.json's MACs."""

import warnings

import numpy as np
import pytest

import keras_smart
from keras_smart import export
from tests.export import common
from tests.models import keras


@pytest.fixture(scope="module")
def channel_cnn():
    """A small CNN trained briefly on the digits, converted, with channel masks (clean 0.5, adversarial 0.75)."""
    keras.utils.set_random_seed(0)
    x, y = keras_smart.data.digits("train")
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(16, 3, strides=2, activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(32, 3, strides=2, name="conv2")(h)
    h = keras.layers.BatchNormalization(name="bn")(h)
    h = keras.layers.ReLU(name="relu")(h)
    h = keras.layers.MaxPooling2D(2, name="pool")(h)
    plain = keras.Model(inputs, keras.layers.Dense(10, name="logits")(keras.layers.Flatten(name="flat")(h)))
    plain.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(x[:2000], y[:2000], batch_size=64, epochs=2, verbose=0)
    smart = keras_smart.convert(plain, "smart")
    with warnings.catch_warnings():  # the logits keep every channel: they are the output
        warnings.filterwarnings("ignore", message="design_masks.granularity='channel'. keeps every output channel")
        keras_smart.design_masks(smart, score="magnitude", density=(0.5, 0.75), granularity="channel")
    return smart, x[:200], x[2000:2300]


def test_compacted_int8_and_float_files_pass_the_litert_check_against_the_smart_model(channel_cnn, tmp_path):
    smart, calibration, check = channel_cnn
    dense_macs = keras_smart.count_nonzero(keras_smart.strip(smart, 0.0)).macs_dense
    result = export.to_tflite(
        smart, tmp_path / "int8.tflite", tradeoff=0.0, compact=True, quantize="int8",
        representative_data=calibration, check_data=check,
    )
    assert result.agreement >= 0.98 and result.check_samples == 300
    got, expected = common.run_file(result.path, check), common.keras_outputs(smart, check, 0.0)
    assert np.mean(np.argmax(got, -1) == np.argmax(expected, -1)) >= 0.95  # the check's 0.98 counts 8-bit ties
    narrow = keras_smart.strip(smart, 0.0, compact=True)
    assert result.executed_macs == keras_smart.count_nonzero(narrow).macs_dense < 0.5 * dense_macs
    result = export.to_tflite(smart, tmp_path / "f32.tflite", tradeoff=1.0, compact=True, check_data=check)
    assert result.max_abs_diff <= 1e-4
    assert np.max(np.abs(common.run_file(result.path, check) - common.keras_outputs(smart, check, 1.0))) <= 1e-4


def test_compact_needs_a_baked_tradeoff_of_a_smart_model_with_channel_masks(channel_cnn, tmp_path):
    smart, _, check = channel_cnn
    with pytest.raises(ValueError, match="compact=True needs a baked trade-off"):
        export.to_tflite(smart, tmp_path / "r.tflite", runtime_tradeoff=True, compact=True, check_data=check)
    with pytest.raises(ValueError, match="compact=True needs a baked trade-off"):
        export.bundle(smart, tmp_path / "b", runtime_tradeoff=True, compact=True, check_data=check)
    plain = keras_smart.strip(smart, 0.0)
    with pytest.raises(ValueError, match="plain Keras model.*keras_smart.compaction.compact"):
        export.to_tflite(plain, tmp_path / "p.tflite", compact=True, check_data=check)
    unstructured = keras_smart.convert(plain, "smart")
    keras_smart.design_masks(unstructured, score="random", density=0.5)
    with pytest.raises(ValueError, match="Layer 'conv1'.*not channel-structured"):
        export.to_tflite(unstructured, tmp_path / "u.tflite", tradeoff=0.0, compact=True, check_data=check)
    assert common.files(tmp_path) == []


def test_smart_json_gives_each_file_its_executed_and_non_zero_macs(channel_cnn, tmp_path):
    smart, _, check = channel_cnn
    compacted = export.bundle(smart, tmp_path / "compact", compact=True, check_data=check[:16])
    dense = export.bundle(smart, tmp_path / "dense", compact=False, check_data=check[:16])
    counts = keras_smart.count_nonzero(smart)
    for tradeoff, path_macs, small, full in zip((0.0, 1.0), (counts.macs_clean, counts.macs_adv),
                                                compacted["files"], dense["files"]):
        assert full["executed_macs"] == keras_smart.count_nonzero(keras_smart.strip(smart, tradeoff)).macs_dense
        assert full["nonzero_macs"] == path_macs < full["executed_macs"], "a pruned file still runs its zeros"
        assert small["executed_macs"] == small["nonzero_macs"] < path_macs, "the dropped channels are gone"
    for entry, file in zip(compacted["tradeoffs"], compacted["files"]):
        assert (entry["executed_macs"], entry["nonzero_macs"]) == (file["executed_macs"], file["nonzero_macs"])
    runtime = export.bundle(smart, tmp_path / "runtime", runtime_tradeoff=True, check_data=check[:16])
    masks = keras_smart.get_masks(smart)
    twice = {name for name, m in masks.items() if not np.array_equal(m["kernel_clean_mask"], m["kernel_adv_mask"])}
    assert twice == {"conv1", "conv2"}, "the logits keep every channel on both paths"
    expected = sum(row["macs_dense"] * (2 if name in twice else 1) for name, row in counts.layers.items())
    (file,) = runtime["files"]
    assert file["executed_macs"] == expected and file["nonzero_macs"] is None
    assert [t["nonzero_macs"] for t in runtime["tradeoffs"]] == [counts.macs_clean, counts.macs_adv]


def test_by_default_channel_masks_export_narrow_and_other_masks_dense(channel_cnn, tmp_path):
    smart, _, check = channel_cnn
    narrow = export.to_tflite(smart, tmp_path / "auto.tflite", tradeoff=0.0, check_data=check[:16])
    assert narrow.executed_macs == keras_smart.count_nonzero(keras_smart.strip(smart, 0.0, compact=True)).macs_dense
    unstructured = keras_smart.convert(keras_smart.strip(smart, 1.0), "smart")
    keras_smart.design_masks(unstructured, score="random", density=0.5)
    dense = export.to_tflite(unstructured, tmp_path / "dense.tflite", tradeoff=0.0, check_data=check[:16])
    assert dense.executed_macs == keras_smart.count_nonzero(keras_smart.strip(unstructured, 0.0)).macs_dense
    assert dense.nonzero_macs < dense.executed_macs
    with pytest.raises(ValueError, match='`compact` must be True, False or "auto". Received: compact=\'yes\''):
        export.to_tflite(smart, tmp_path / "bad.tflite", tradeoff=0.0, compact="yes", check_data=check[:16])
    assert sorted(common.files(tmp_path)) == ["auto.tflite", "dense.tflite"]
