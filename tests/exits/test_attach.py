"""attach / exit_points / exit_macs: exits equal hand-built heads, commute with convert, survive save and strip."""

import os

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import exits
from tests import models
from tests.models import keras


def _digits_cnn():
    return keras_smart.backbones.digits_cnn(width=8)


def _mobilenet():
    return keras.applications.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=10)


def _pool_name(model):
    return next(l.name for l in model.layers if isinstance(l, keras.layers.GlobalAveragePooling2D))


def _layers(model):
    """Every layer of `model`, nested models opened (and listed)."""
    found = []
    for layer in model.layers:
        found += [layer] + (_layers(layer) if isinstance(layer, keras.Model) else [])
    return found


def _randomize_batch_norm(model, seed):
    """Batch-norm statistics and affine weights away from their initial values (a reference must read them)."""
    rng = np.random.default_rng(seed)
    for layer in _layers(model):
        if type(layer) is keras.layers.BatchNormalization:  # pylint: disable=unidiomatic-typecheck
            gamma, beta, mean, variance = (w.shape for w in layer.get_weights())
            layer.set_weights([rng.uniform(0.5, 1.5, gamma), rng.normal(0, 0.2, beta),
                               rng.normal(0, 0.2, mean), rng.uniform(0.5, 2.0, variance)])


def _reference_head(features, head):
    """The default head computed by hand from its weights: conv 3x3 stride 2 same -> BN -> ReLU -> 4x4 average -> dense."""
    h = tf.constant(features)
    if len(h.shape) == 4:
        conv, bn = head.get_layer(f"{head.name}_conv"), head.get_layer(f"{head.name}_bn")
        kernel = conv.kernel.numpy()
        assert kernel.shape == (3, 3, h.shape[-1], max(h.shape[-1], 16)) and not conv.use_bias
        gamma, beta, mean, variance = bn.get_weights()
        h = tf.nn.conv2d(h, kernel, 2, "SAME")
        h = tf.nn.relu((h - mean) / np.sqrt(variance + bn.epsilon) * gamma + beta)
        pool = [-(-int(size) // 4) for size in h.shape[1:3]]
        h = tf.nn.avg_pool2d(h, pool, pool, "SAME")  # to at most 4x4, then flattened
        h = tf.reshape(h, [h.shape[0], -1])
    elif len(h.shape) == 3:
        h = tf.reduce_mean(h, axis=1)
    assert head.layers[-1].name == f"{head.name}_logits"
    kernel, bias = head.layers[-1].get_weights()
    return (h @ kernel + bias).numpy()


@pytest.mark.parametrize(
    "build, after",
    [(_digits_cnn, ["pool1", "pool2", "fc"]), (_mobilenet, ["block_2_add", "block_9_add", None])],
    ids=["digits_cnn", "mobilenet_v2"],
)
def test_each_exit_equals_its_hand_built_head_and_the_final_output_is_the_models(build, after):
    model = build()
    after = [name or _pool_name(model) for name in after]
    _randomize_batch_norm(model, seed=1)
    multi = exits.attach(model, after=after)
    for k in range(1, 4):
        _randomize_batch_norm(multi.get_layer(f"exit_{k}"), seed=k + 1)
    x = models.inputs_for(model, batch=4)
    outputs = multi(x)
    assert multi.output_names[:-1] == ["exit_1", "exit_2", "exit_3"]
    assert exits.exit_points(multi) == [(f"exit_{k}", name) for k, name in enumerate(after, start=1)]
    for k, name in enumerate(after):
        features = keras.Model(model.inputs[0], model.get_layer(name).output)(x).numpy()  # from the source model
        reference = _reference_head(features, multi.get_layer(f"exit_{k + 1}"))
        np.testing.assert_allclose(outputs[k], reference, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(outputs[-1], model(x), rtol=1e-5, atol=1e-5)
    assert len(model.outputs) == 1 and not exits.is_multi_exit(model)  # the input model is untouched


def test_sequence_features_get_a_pooling_head_and_a_callable_head_is_used_as_given():
    inputs = keras.Input((6, 4))
    h = keras.layers.Dense(8, name="embed")(inputs)
    h = keras.layers.GlobalAveragePooling1D(name="pool")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    multi = exits.attach(model, after=["embed"])
    x = models.inputs_for(model)
    features = keras.Model(model.inputs[0], model.get_layer("embed").output)(x).numpy()
    np.testing.assert_allclose(multi(x)[0], _reference_head(features, multi.get_layer("exit_1")), atol=1e-5)

    def head(features, classes):
        return keras.layers.Dense(classes)(keras.layers.Flatten()(features))

    custom = exits.attach(model, after=["embed"], head=head)
    layers = custom.get_layer("exit_1").layers
    assert [type(l).__name__ for l in layers] == ["InputLayer", "Flatten", "Dense"]
    kernel, bias = layers[-1].get_weights()
    np.testing.assert_allclose(custom(x)[0], features.reshape(len(x), -1) @ kernel + bias, atol=1e-5)


def test_head_layers_named_like_the_trunks_or_another_heads_are_renamed_apart():
    model = _digits_cnn()  # has layers "flatten" and "logits"

    def head(features, classes):
        return keras.layers.Dense(classes, name="logits")(keras.layers.Flatten(name="flatten")(features))

    multi = exits.attach(model, after=["pool1", "pool2"], head=head)
    assert [l.name for l in multi.get_layer("exit_1").layers] == ["exit_1_input", "exit_1_flatten", "exit_1_logits"]
    assert [l.name for l in multi.get_layer("exit_2").layers] == ["exit_2_input", "exit_2_flatten", "exit_2_logits"]
    x = models.inputs_for(model)
    features = keras.Model(model.inputs[0], model.get_layer("pool2").output)(x).numpy().reshape(len(x), -1)
    kernel, bias = multi.get_layer("exit_2").get_layer("exit_2_logits").get_weights()
    np.testing.assert_allclose(multi(x)[1], features @ kernel + bias, rtol=1e-5, atol=1e-5)
    assert keras_smart.count_nonzero(multi).layers.keys() >= {"logits", "exit_1_logits", "exit_2_logits"}


@pytest.mark.parametrize("method", models.METHODS)
def test_convert_after_attach_equals_attach_after_convert(method):
    model = _digits_cnn()
    plain = exits.attach(model, after=["pool1", "fc"])
    converted_after = keras_smart.convert(plain, method)
    source = keras_smart.convert(model, method)
    attached_after = exits.attach(source, after=["pool1", "fc"])
    for multi in (converted_after, attached_after):
        classes = {l.name: type(l).__name__ for l in _layers(multi)}
        assert classes == {l.name: type(l).__name__ for l in _layers(converted_after)}
        head_layers = multi.get_layer("exit_1").layers
        assert any(isinstance(l, keras_smart.layers.ConditionalLayer) for l in head_layers)
        keras_smart.set_tradeoff(multi, 0.7)
        np.testing.assert_allclose([l.current_tradeoff() for l in multi.conditional_layers()], 0.7)
        keras_smart.set_tradeoff(multi, 0.0)
    assert keras_smart.get_tradeoff(source) == 0.0  # the source SmartModel keeps its own trade-off
    assert {float(l.current_tradeoff()) for l in source.conditional_layers()} == {0.0}
    x = models.inputs_for(model)
    for got, want in zip(converted_after(x), plain(x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(attached_after(x)[-1], model(x), rtol=1e-5, atol=1e-5)


def test_a_multi_exit_smart_model_survives_keras_files_and_strips_to_a_plain_multi_output_model(tmp_path):
    smart = keras_smart.convert(_digits_cnn(), "smart")
    multi = exits.attach(smart, after=["pool1", "pool2"])
    models.randomize_conditional_state(multi, seed=3)
    keras_smart.set_tradeoff(multi, 1.0)
    x = models.inputs_for(multi)
    path = os.path.join(tmp_path, "multi.keras")
    multi.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, keras_smart.SmartModel) and keras_smart.get_tradeoff(loaded) == 1.0
    assert exits.exit_points(loaded) == exits.exit_points(multi)
    for got, want in zip(loaded(x), multi(x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    keras_smart.set_tradeoff(loaded, 0.0)
    assert {float(l.current_tradeoff()) for l in loaded.conditional_layers()} == {0.0}
    assert models.max_abs_diff(loaded(x)[0], multi(x)[0]) > 1e-3  # the heads' paths differ too
    plain = keras_smart.strip(multi, tradeoff=1.0)
    assert not any(isinstance(l, keras_smart.layers.ConditionalLayer) for l in _layers(plain))
    assert exits.exit_points(plain) == exits.exit_points(multi) and plain.output_names == multi.output_names
    for got, want in zip(plain(x), multi(x)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_exit_macs_stage_the_trunk_and_heads_and_end_at_the_whole_models_count():
    smart = keras_smart.convert(_digits_cnn(), "smart")
    multi = exits.attach(smart, after=["pool1", "pool2"])
    keras_smart.design_masks(multi, score="random", density=(0.8, 0.4), seed=0)
    rows = keras_smart.count_nonzero(multi).layers
    for tradeoff, key in ((0.0, "macs_clean"), (1.0, "macs_adv")):
        keras_smart.set_tradeoff(multi, tradeoff)
        macs = exits.exit_macs(multi)
        first = rows["conv1"][key] + sum(rows[f"exit_1_{n}"][key] for n in ("conv", "logits"))
        second = first + rows["conv2"][key] + sum(rows[f"exit_2_{n}"][key] for n in ("conv", "logits"))
        assert macs == (first, second, getattr(keras_smart.count_nonzero(multi), key))
        assert list(macs) == sorted(set(macs))
    assert exits.exit_macs(multi, tradeoff=0.0)[-1] == keras_smart.count_nonzero(multi).macs_clean


def test_exit_macs_count_only_the_branches_an_exit_depends_on():
    inputs = keras.Input((8, 8, 1))
    a = keras.layers.Conv2D(4, 3, padding="same", name="a")(inputs)
    b = keras.layers.Conv2D(4, 3, padding="same", name="b")(inputs)  # a parallel branch exit 1 does not need
    h = keras.layers.Add(name="add")([a, b])
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    multi = exits.attach(model, after=["a"], head=lambda f, c: keras.layers.Dense(c, name="side")(
        keras.layers.GlobalAveragePooling2D(name="side_pool")(f)))
    a_macs, b_macs = 3 * 3 * 1 * 4 * 64, 3 * 3 * 1 * 4 * 64
    assert exits.exit_macs(multi) == (a_macs + 4 * 3, a_macs + 4 * 3 + b_macs + 4 * 3)


def test_attach_refuses_what_it_cannot_attach_to_with_the_way_forward():
    model = _digits_cnn()
    with pytest.raises(ValueError, match=r"no layer .*'conv_1'.*similar names: \['conv1'.*model.summary\(\)"):
        exits.attach(model, after=["conv_1"])
    with pytest.raises(ValueError, match="graph order"):
        exits.attach(model, after=["pool2", "pool1"])
    with pytest.raises(ValueError, match="more than once"):
        exits.attach(model, after=["pool1", "pool1"])
    with pytest.raises(ValueError, match="already the last exit"):
        exits.attach(model, after=["logits"])
    with pytest.raises(ValueError, match="empty"):
        exits.attach(model, after=[])
    with pytest.raises(TypeError, match="list of layer names"):
        exits.attach(model, after=[3])
    with pytest.raises(ValueError, match="already has exits"):
        exits.attach(exits.attach(model, after=["pool1"]), after=["pool2"])
    with pytest.raises(ValueError, match=r"logits of shape \(None, 10\).*Received: shape \(None, 14, 14, 8\)"):
        exits.attach(model, after=["pool1"], head=lambda features, classes: features)
    nested_head = lambda f, c: keras.Sequential(  # noqa: E731
        [keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(c, name="fc")], name="inner")(f)
    with pytest.raises(ValueError, match="unique.*'fc' \\(the trunk and exit_1\\)"):
        exits.attach(model, after=["pool1"], head=nested_head)
    with pytest.raises(ValueError, match="not a multi-exit model"):
        exits.exit_points(model)
    with pytest.raises(ValueError, match="not a multi-exit model"):
        exits.exit_macs(model)


def test_attach_refuses_nested_shared_and_non_classifier_models():
    nested = models.nested_model()
    with pytest.raises(ValueError, match="inside the nested model 'inner_seq'"):
        exits.attach(nested, after=["inner_fc"])
    with pytest.raises(ValueError, match="called 2 times"):
        exits.attach(nested, after=["block"])
    inputs = keras.Input((8, 8, 1))
    features = keras.Model(inputs, keras.layers.Conv2D(2, 3, name="conv")(inputs))
    with pytest.raises(ValueError, match=r"logits \[B, classes\]"):
        exits.attach(features, after=["conv"])
    two = [keras.Input((4,)), keras.Input((4,))]
    with pytest.raises(ValueError, match="one input and one output"):
        exits.attach(keras.Model(two, keras.layers.Dense(2)(keras.layers.Concatenate()(two))), after=["dense"])

    class Subclassed(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="subclassed"):
        exits.attach(Subclassed(), after=["x"])
