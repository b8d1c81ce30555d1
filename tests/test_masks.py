"""design_masks / set_masks / get_masks / count_nonzero."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import layers as cl
from tests import models
from tests.models import keras


def _smart(method="smart", **options):
    return keras_smart.convert(models.conv_block_model(), method=method, **options)


def test_random_masks_give_each_path_its_density_and_its_own_outputs():
    smart = _smart()
    masks = keras_smart.design_masks(smart, score="random", density=(0.5, 0.5), seed=0)
    assert set(masks) == {"conv", "dw", "sep", "fc1", "logits"}
    assert set(masks["sep"]) == {
        "depthwise_kernel_clean_mask",
        "depthwise_kernel_adv_mask",
        "pointwise_kernel_clean_mask",
        "pointwise_kernel_adv_mask",
    }
    for layer_masks in masks.values():
        for mask in layer_masks.values():
            assert abs(mask.sum() - 0.5 * mask.size) <= 1, "density off by more than one weight"
    assert not np.array_equal(masks["conv"]["kernel_clean_mask"], masks["conv"]["kernel_adv_mask"])
    x = models.inputs_for(smart)
    clean = smart(x).numpy()
    keras_smart.set_tradeoff(smart, 1.0)
    assert models.max_abs_diff(clean, smart(x)) > 1e-3


@pytest.mark.parametrize("density", [(0.3, 0.7), (0.05, 1.0)])
def test_each_path_gets_its_own_density(density):
    smart = _smart()
    keras_smart.design_masks(smart, score="random", density=density, seed=4)
    for name, layer_masks in keras_smart.get_masks(smart).items():
        for mask_name, mask in layer_masks.items():
            d = density[0] if "clean" in mask_name else density[1]
            expected = max(1, round(d * mask.size))
            assert abs(mask.sum() - expected) <= 1, (name, mask_name)


def test_magnitude_masks_keep_the_largest_weights_and_coincide_at_equal_density():
    smart = _smart()
    masks = keras_smart.design_masks(smart, score="magnitude", density=0.25)
    kernel = np.abs(smart.get_layer("conv").kernel.numpy())
    kept = kernel[masks["conv"]["kernel_clean_mask"] == 1]
    dropped = kernel[masks["conv"]["kernel_clean_mask"] == 0]
    assert kept.min() >= dropped.max()
    np.testing.assert_array_equal(masks["conv"]["kernel_clean_mask"], masks["conv"]["kernel_adv_mask"])


def test_random_masks_are_reproducible_from_the_seed():
    a = keras_smart.design_masks(_smart(), score="random", density=0.5, seed=7)
    b = keras_smart.design_masks(_smart(), score="random", density=0.5, seed=7)
    c = keras_smart.design_masks(_smart(), score="random", density=0.5, seed=8)
    np.testing.assert_array_equal(a["fc1"]["kernel_adv_mask"], b["fc1"]["kernel_adv_mask"])
    assert not np.array_equal(a["fc1"]["kernel_adv_mask"], c["fc1"]["kernel_adv_mask"])


@pytest.mark.parametrize("lam, mask_name", [(0.0, "kernel_clean_mask"), (1.0, "kernel_adv_mask")])
def test_masked_weights_get_zero_gradient_on_their_path(lam, mask_name):
    smart = _smart()
    masks = keras_smart.design_masks(smart, score="random", density=(0.4, 0.6), seed=0)
    keras_smart.set_tradeoff(smart, lam)
    x = tf.constant(models.inputs_for(smart, batch=4))
    layer = smart.get_layer("conv")
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(tf.square(smart(x, training=True)))
    grad = tape.gradient(loss, layer.kernel).numpy()
    mask = masks["conv"][mask_name]
    assert np.all(grad[mask == 0] == 0.0)
    assert np.count_nonzero(grad[mask == 1]) > 0.5 * mask.sum()  # kept weights do learn


def test_floats_has_one_mask_shared_by_both_paths():
    smart = _smart("floats")
    masks = keras_smart.design_masks(smart, score="magnitude", density=0.3)
    assert set(masks["conv"]) == {"kernel_mask"}
    counts = keras_smart.count_nonzero(smart)
    assert counts.clean == counts.adv == counts.union
    assert abs(counts.clean - 0.3 * counts.total) <= len(counts.layers) * 2
    with pytest.raises(ValueError, match="one mask.*one density"):
        keras_smart.design_masks(smart, density=(0.3, 0.5))


def test_set_masks_round_trips_get_masks():
    smart = _smart()
    designed = keras_smart.design_masks(smart, score="random", density=(0.2, 0.8), seed=1)
    other = _smart()
    keras_smart.set_masks(other, designed)
    for name, layer_masks in keras_smart.get_masks(other).items():
        for mask_name, mask in layer_masks.items():
            np.testing.assert_array_equal(mask, designed[name][mask_name])


def _assert_masks_unchanged(smart, before):
    for name, layer_masks in keras_smart.get_masks(smart).items():
        for mask_name, mask in layer_masks.items():
            np.testing.assert_array_equal(mask, before[name][mask_name])


@pytest.mark.parametrize(
    "masks, error, fragment",
    [
        ({"nope": {}}, ValueError, "No masked layer named 'nope'.*Masked layers"),
        ({"conv": {"kernel_mask": np.ones((3, 3, 3, 8))}}, ValueError, "has no mask 'kernel_mask'"),
        ({"conv": {"kernel_adv_mask": np.ones((3, 3, 3, 4))}}, ValueError, r"shape \(3, 3, 3, 8\).*\(3, 3, 3, 4\)"),
        ({"conv": {"kernel_adv_mask": np.full((3, 3, 3, 8), 0.5)}}, ValueError, "only 0 and 1"),
        ({"conv": np.ones(3)}, TypeError, "must map mask names"),
        ([("conv", {})], TypeError, "must map layer names"),
    ],
)
def test_bad_masks_are_rejected_and_nothing_changes(masks, error, fragment):
    smart = _smart()
    before = keras_smart.design_masks(smart, score="random", density=0.5, seed=0)
    # A valid entry comes first: it must not be applied when a later one is bad.
    good = {"fc1": {"kernel_clean_mask": np.zeros_like(before["fc1"]["kernel_clean_mask"])}}
    payload = {**good, **masks} if isinstance(masks, dict) else masks
    with pytest.raises(error, match=fragment):
        keras_smart.set_masks(smart, payload)
    _assert_masks_unchanged(smart, before)


@pytest.mark.parametrize("density", [0.0, -0.5, 1.5, float("nan"), (0.5,), (0.5, 2.0)])
def test_invalid_density_is_rejected(density):
    with pytest.raises(ValueError, match="density"):
        keras_smart.design_masks(_smart(), density=density)


def test_invalid_score_is_rejected():
    with pytest.raises(ValueError, match="Unknown `score`"):
        keras_smart.design_masks(_smart(), score="snap")


@pytest.mark.parametrize("method", ["float", "oat"])
def test_masks_need_a_masked_method(method):
    with pytest.raises(ValueError, match="method='smart' or method='floats'"):
        keras_smart.design_masks(_smart(method))


def test_count_nonzero_counts_paths_union_and_macs():
    smart = _smart()
    dense = keras_smart.count_nonzero(smart)
    assert dense.clean == dense.adv == dense.union == dense.total
    assert dense.macs_clean == dense.macs_adv == dense.macs_dense
    conv = smart.get_layer("conv")
    assert dense.layers["conv"]["macs_dense"] == 12 * 12 * conv.kernel.numpy().size
    keras_smart.design_masks(smart, score="random", density=(0.25, 0.5), seed=0)
    counts = keras_smart.count_nonzero(smart)
    assert counts.total == dense.total
    assert counts.clean < counts.adv < counts.union <= counts.total
    assert counts.union >= max(counts.clean, counts.adv)
    assert counts.macs_clean < counts.macs_adv < counts.macs_dense
    fc = smart.get_layer("fc1")
    masks = keras_smart.get_masks(smart)["fc1"]
    assert counts.layers["fc1"]["clean"] == np.count_nonzero(fc.kernel.numpy() * masks["kernel_clean_mask"])


def test_count_nonzero_reports_conditioning_weights():
    assert keras_smart.count_nonzero(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])).conditioning == 0
    assert keras_smart.count_nonzero(_smart("oat")).conditioning > keras_smart.count_nonzero(_smart("smart")).conditioning
    float_model = _smart("float")
    assert keras_smart.count_nonzero(float_model).conditioning >= len(
        [l for l in float_model.layers if isinstance(l, cl.ConditionalKernel)]
    )


# --- design from training signal: snip, learned, overlap, MaskUpdate --------------------------------

from keras_smart import attacks  # noqa: E402

_ATTACK = keras_smart.AttackConfig(eps=0.1, steps=3, random_start=False)


def _mlp(seed=0):
    """A small MLP without batch-norm: with all-ones masks both SMART paths compute what it computes."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="tanh", name="fc1")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, name="fc2")(h))


def _mlp_data(n=96, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 12)).astype("float32")
    y = (x[:, :4].argmax(-1)).astype("int64")  # learnable: the largest of the first four features
    return x, y


def _snip_reference(model, x, y, adversarial):
    """|W * dL/dW| for fc1's kernel of the plain model, on clean or attacked inputs."""
    loss_fn = lambda t: tf.reduce_sum(
        tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(y), model(t, training=False))
    )
    x = tf.constant(x)
    if adversarial:
        x = attacks.run(_ATTACK, lambda t: model(t, training=False), x, tf.constant(y))
    kernel = model.get_layer("fc1").kernel
    with tf.GradientTape() as tape:
        loss = loss_fn(x)
    return np.abs(kernel.numpy() * tape.gradient(loss, kernel).numpy())


def test_snip_keeps_the_weights_with_the_highest_clean_and_adversarial_saliency():
    plain = _mlp()
    x, y = _mlp_data()
    smart = keras_smart.convert(plain, "smart")
    masks = keras_smart.design_masks(
        smart, score="snip", density=(0.3, 0.3), data=(x, y), attack=_ATTACK, batch_size=len(x)
    )["fc1"]
    for mask_name, adversarial in (("kernel_clean_mask", False), ("kernel_adv_mask", True)):
        saliency = _snip_reference(plain, x, y, adversarial)
        kept, dropped = saliency[masks[mask_name] == 1], saliency[masks[mask_name] == 0]
        assert kept.min() >= dropped.max() - 1e-6, mask_name
    assert not np.array_equal(masks["kernel_clean_mask"], masks["kernel_adv_mask"])


def test_snip_on_a_multi_exit_model_scores_the_loss_summed_over_its_exits():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12,))
    h = keras.layers.Dense(16, activation="tanh", name="fc1")(inputs)
    plain = keras.Model(inputs, [keras.layers.Dense(4, name="side")(h), keras.layers.Dense(4, name="fc2")(h)])
    x, y = _mlp_data()
    masks = keras_smart.design_masks(
        keras_smart.convert(plain, "smart"), score="snip", density=(0.3, 0.3), data=(x, y), attack=_ATTACK,
        batch_size=len(x),
    )["fc1"]
    model_fn = lambda t: plain(t, training=False)  # noqa: E731

    def summed_loss(t):
        return tf.add_n([tf.reduce_sum(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.constant(y), logits))
                         for logits in model_fn(t)])

    x_adv = attacks.run_multi_exit(_ATTACK, model_fn, tf.constant(x), tf.constant(y), mode="max_average")
    kernel = plain.get_layer("fc1").kernel
    for mask_name, inputs_ in (("kernel_clean_mask", tf.constant(x)), ("kernel_adv_mask", x_adv)):
        with tf.GradientTape() as tape:
            loss = summed_loss(inputs_)
        saliency = np.abs(kernel.numpy() * tape.gradient(loss, kernel).numpy())
        kept, dropped = saliency[masks[mask_name] == 1], saliency[masks[mask_name] == 0]
        assert kept.min() >= dropped.max() - 1e-6, mask_name


def test_snip_scores_a_dataset_as_it_scores_the_same_arrays():
    smart = keras_smart.convert(_mlp(), "smart")
    x, y = _mlp_data()
    from_arrays = keras_smart.design_masks(smart, score="snip", density=0.5, data=(x, y), attack=_ATTACK, batch_size=32)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    from_dataset = keras_smart.design_masks(smart, score="snip", density=0.5, data=dataset, attack=_ATTACK)
    for mask_name in ("kernel_clean_mask", "kernel_adv_mask"):
        np.testing.assert_array_equal(from_arrays["fc2"][mask_name], from_dataset["fc2"][mask_name])


def _clean_loss(smart, x, y):
    keras_smart.set_tradeoff(smart, 0.0)
    return float(tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(y, smart(x, training=False))))


def test_learned_scores_lower_the_loss_below_the_magnitude_masks_they_start_from():
    plain = _mlp()
    x, y = _mlp_data(256)
    plain.compile(keras.optimizers.Adam(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    plain.fit(x, y, epochs=20, batch_size=64, verbose=0)
    smart = keras_smart.convert(plain, "smart")
    keras_smart.design_masks(smart, score="magnitude", density=0.2)
    magnitude_loss = _clean_loss(smart, x, y)
    masks = keras_smart.design_masks(
        smart, score="learned", density=0.2, data=(x, y), attack=_ATTACK, batch_size=256, steps=40, learning_rate=0.02
    )
    assert _clean_loss(smart, x, y) < magnitude_loss
    for layer_masks in masks.values():
        for mask in layer_masks.values():
            assert abs(mask.sum() - round(0.2 * mask.size)) <= 1


@pytest.mark.parametrize("score", ["magnitude", "random", "snip"])
def test_max_overlap_bounds_the_weights_both_paths_keep(score):
    smart = keras_smart.convert(_mlp(), "smart")
    x, y = _mlp_data()
    data = {"data": (x, y), "attack": _ATTACK} if score == "snip" else {}
    masks = keras_smart.design_masks(smart, score=score, density=(0.4, 0.3), max_overlap=0.25, **data)
    for layer_masks in masks.values():
        clean, adv = layer_masks["kernel_clean_mask"], layer_masks["kernel_adv_mask"]
        assert (clean * adv).sum() <= np.floor(0.25 * min(clean.sum(), adv.sum()))
        assert abs(adv.sum() - round(0.3 * adv.size)) <= 1


def test_an_infeasible_overlap_fails_and_keeps_the_old_masks():
    smart = keras_smart.convert(_mlp(), "smart")
    before = keras_smart.design_masks(smart, score="random", density=0.5, seed=3)
    with pytest.raises(ValueError, match="max_overlap"):
        keras_smart.design_masks(smart, score="magnitude", density=(0.8, 0.8), max_overlap=0.0)
    _assert_masks_unchanged(smart, before)


def test_a_failing_snip_design_restores_the_masks():
    smart = keras_smart.convert(_mlp(), "smart")
    before = keras_smart.design_masks(smart, score="random", density=0.5, seed=3)
    x, y = _mlp_data()

    def broken_loss(labels, outputs):
        raise RuntimeError("loss failed")

    with pytest.raises(RuntimeError, match="loss failed"):
        keras_smart.design_masks(smart, score="snip", density=0.5, data=(x, y), loss_fn=broken_loss)
    _assert_masks_unchanged(smart, before)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"score": "snip"}, "needs `data`"),
        ({"score": "magnitude", "data": _mlp_data()}, "does not use `data`"),
        ({"score": "snip", "data": (np.zeros((0, 12), "float32"), np.zeros((0,), "int64"))}, "`data` is empty"),
        ({"score": "snip", "data": (np.zeros((4, 12)), np.zeros((3,)))}, "differ in length"),
        ({"max_overlap": 1.5}, "max_overlap"),
        ({"score": "learned", "data": _mlp_data(), "steps": 0}, "steps"),
        ({"score": "learned", "data": _mlp_data(), "learning_rate": 0.0}, "`learning_rate` must be > 0"),
        ({"allocation": "model", "dense_layers": ["fc1", "fc2"]}, "`allocation`"),  # also when no layer is designed
    ],
)
def test_bad_design_arguments_fail_clearly(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        keras_smart.design_masks(keras_smart.convert(_mlp(), "smart"), **kwargs)


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        ({"batch_size": 2.5}, "`batch_size` must be an int >= 1"),
        ({"max_batches": True}, "`max_batches` must be an int >= 1"),
        ({"min_density": "0.5"}, "`min_density` must be a real number"),
    ],
)
def test_design_settings_of_the_wrong_type_are_type_errors(kwargs, fragment):
    with pytest.raises(TypeError, match=fragment):
        keras_smart.design_masks(keras_smart.convert(_mlp(), "smart"), **kwargs)


def _digits_cnn(method):
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, activation="relu", name="conv")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn")(h)
    h = keras.layers.Flatten()(h)
    smart = keras_smart.convert(keras.Model(inputs, keras.layers.Dense(10, name="logits")(h)), method)
    smart.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return smart


@pytest.mark.parametrize("method, density", [("smart", (0.5, 0.3)), ("floats", 0.4)])
def test_mask_update_designs_once_after_the_warm_up(method, density):
    x, y = keras_smart.data.digits("train")
    x, y = x[:256], y[:256]
    smart = _digits_cnn(method)
    update = keras_smart.callbacks.MaskUpdate((x[:64], y[:64]), score="snip", density=density, warmup_epochs=1)
    attack = keras_smart.AttackConfig(kind="fgsm", eps=0.1)
    history = smart.fit(
        x, y, batch_size=64, epochs=3, verbose=0,
        callbacks=[keras_smart.callbacks.AdversarialCallback(attack=attack), update],
    )
    assert update.designs == [1]
    counts = keras_smart.count_nonzero(smart)
    densities = density if isinstance(density, tuple) else (density, density)
    assert abs(counts.layers["conv"]["clean"] / counts.layers["conv"]["total"] - densities[0]) < 0.02
    assert abs(counts.layers["logits"]["adv"] / counts.layers["logits"]["total"] - densities[1]) < 0.02
    assert np.all(np.isfinite(history.history["loss"]))


def test_mask_update_refreshes_on_schedule():
    update = keras_smart.callbacks.MaskUpdate(score="random", warmup_epochs=2, refresh_every=3)
    assert [e for e in range(10) if update.due(e)] == [2, 5, 8]
    with pytest.raises(ValueError, match="refresh_every"):
        keras_smart.callbacks.MaskUpdate(score="random", refresh_every=0)
    with pytest.raises(ValueError, match="needs `data`"):
        keras_smart.callbacks.MaskUpdate(score="snip")


def test_global_allocation_ranks_all_kernels_together():
    smart = keras_smart.convert(_mlp(), "smart")
    fc1, fc2 = smart.get_layer("fc1"), smart.get_layer("fc2")
    fc2.kernel.assign(np.abs(fc2.kernel.numpy()) + 10.0)  # the small layer's weights all outrank the large one's
    masks = keras_smart.design_masks(smart, score="magnitude", density=(0.4, 0.3), allocation="global")
    for name, density in (("kernel_clean_mask", 0.4), ("kernel_adv_mask", 0.3)):
        assert masks["fc2"][name].sum() == 64, "every weight of the high-scoring kernel is kept"
        assert masks["fc1"][name].sum() + 64 == round(density * 192) + round(density * 64)  # the same total
    by_layer = keras_smart.design_masks(smart, score="magnitude", density=(0.4, 0.3))
    assert by_layer["fc2"]["kernel_clean_mask"].sum() == round(0.4 * 64)


def test_global_allocation_keeps_a_weight_in_every_kernel_and_rejects_bad_options():
    smart = keras_smart.convert(_mlp(), "smart")
    smart.get_layer("fc2").kernel.assign(smart.get_layer("fc2").kernel.numpy() * 1e-6)
    masks = keras_smart.design_masks(smart, score="magnitude", density=0.1, allocation="global")
    assert masks["fc2"]["kernel_clean_mask"].sum() >= 1 and masks["fc2"]["kernel_adv_mask"].sum() >= 1
    with pytest.raises(ValueError, match='`allocation` must be "layer" or "global"'):
        keras_smart.design_masks(smart, density=0.1, allocation="model")
    x, y = _mlp_data()
    with pytest.raises(ValueError, match="learned.*allocation=\"layer\""):
        keras_smart.design_masks(smart, score="learned", density=0.1, data=(x, y), allocation="global")


def test_min_density_floors_every_kernel_out_of_the_same_global_budget():
    smart = keras_smart.convert(_mlp(), "smart")
    smart.get_layer("fc2").kernel.assign(smart.get_layer("fc2").kernel.numpy() * 1e-6)  # outranked everywhere
    masks = keras_smart.design_masks(smart, score="magnitude", density=0.3, allocation="global", min_density=0.25)
    for name in ("kernel_clean_mask", "kernel_adv_mask"):
        assert masks["fc2"][name].sum() == round(0.25 * 64)
        assert masks["fc1"][name].sum() + masks["fc2"][name].sum() == round(0.3 * 192) + round(0.3 * 64)
        # The floor keeps the kernel's own best weights.
        kernel = np.abs(smart.get_layer("fc2").kernel.numpy())
        assert kernel[masks["fc2"][name] > 0].min() >= np.sort(kernel.ravel())[-16]
    per_layer = keras_smart.design_masks(smart, score="magnitude", density=0.1, min_density=0.25)
    assert per_layer["fc1"]["kernel_clean_mask"].sum() == round(0.25 * 192)
    with pytest.raises(ValueError, match="more than the"):
        keras_smart.design_masks(smart, score="magnitude", density=0.1, allocation="global", min_density=0.5)
    with pytest.raises(ValueError, match="min_density"):
        keras_smart.design_masks(smart, density=0.3, min_density=1.5)


def test_dense_layers_stay_dense_on_both_paths():
    smart = keras_smart.convert(_mlp(), "smart")
    masks = keras_smart.design_masks(smart, score="magnitude", density=(0.5, 0.3), dense_layers=["fc2"])
    assert masks["fc2"]["kernel_clean_mask"].all() and masks["fc2"]["kernel_adv_mask"].all()
    assert masks["fc1"]["kernel_adv_mask"].sum() == round(0.3 * 192)
    x, y = _mlp_data()
    masks = keras_smart.design_masks(smart, score="snip", density=0.2, data=(x, y), dense_layers=["fc2"],
                                     allocation="global", attack=keras_smart.AttackConfig(kind="fgsm", eps=0.1))
    assert masks["fc2"]["kernel_adv_mask"].all() and masks["fc1"]["kernel_adv_mask"].sum() == round(0.2 * 192)
    with pytest.raises(ValueError, match="names no masked layer"):
        keras_smart.design_masks(smart, dense_layers=["head"])
    with pytest.raises(TypeError, match="list of layer names"):
        keras_smart.design_masks(smart, dense_layers="fc2")


@pytest.mark.parametrize("rewind", [False, True])
def test_mask_update_can_rewind_the_weights_to_where_fit_started(rewind):
    smart = keras_smart.convert(_mlp(), "smart")
    update = keras_smart.callbacks.MaskUpdate(score="magnitude", density=0.5, warmup_epochs=1, rewind=rewind)
    update.set_model(smart)
    update.on_train_begin()
    start = [v.numpy() for v in smart.trainable_weights]
    for variable in smart.trainable_weights:  # what a warm-up epoch would do
        variable.assign(variable.numpy() + 1.0)
    warmed = [v.numpy() for v in smart.trainable_weights]
    update.on_epoch_begin(0)  # not yet due
    update.on_epoch_begin(1)
    assert update.designs == [1]
    expected = start if rewind else warmed
    for variable, value in zip(smart.trainable_weights, expected):
        np.testing.assert_array_equal(variable.numpy(), value)
    # The masks were chosen on the warmed-up weights (magnitude of W + 1), before the rewind.
    kernel = warmed[[i for i, v in enumerate(smart.trainable_weights) if v is smart.get_layer("fc1").kernel][0]]
    mask = keras_smart.get_masks(smart)["fc1"]["kernel_clean_mask"]
    assert np.abs(kernel)[mask > 0].min() >= np.median(np.abs(kernel))
    with pytest.raises(TypeError, match="`rewind` must be True or False"):
        keras_smart.callbacks.MaskUpdate(score="magnitude", rewind="yes")
