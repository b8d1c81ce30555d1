"""One label rule for the package: ids [N], ids [N, 1] and one-hot rows give the same attacks, fits and numbers."""

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import attacks
from keras_smart import labels

keras = _compat.keras

CLASSES = 3
IDS = np.array([0, 2, 1, 0, 1, 2, 0, 0])


def _forms(ids, classes=CLASSES):
    """The same labels as ids [N], ids [N, 1] and one-hot rows [N, classes]."""
    return {"ids": ids, "ids_n1": ids[:, None], "one_hot": np.eye(classes, dtype="float32")[ids]}


# --- class_ids (NumPy) -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "y",
    [
        IDS,
        IDS[:, None],
        IDS.astype("int32")[:, None],
        IDS.astype("float32"),
        IDS.astype("float64")[:, None],
        np.eye(CLASSES, dtype="float32")[IDS],
        np.eye(CLASSES, dtype=bool)[IDS],
        0.8 * np.eye(CLASSES)[IDS] + 0.2 / CLASSES,  # label-smoothed (soft) rows
    ],
    ids=["ids", "ids_n1", "int32_n1", "float_ids", "float_ids_n1", "one_hot", "bool_one_hot", "soft"],
)
def test_class_ids_reads_every_accepted_form(y):
    out = labels.class_ids(y, num_classes=CLASSES)
    assert out.dtype == np.int64 and out.shape == (len(IDS),)
    np.testing.assert_array_equal(out, IDS)
    np.testing.assert_array_equal(labels.class_ids(y), IDS)  # class count unknown


def test_class_ids_takes_empty_labels():
    assert labels.class_ids(np.zeros((0,), "int64"), 3).shape == (0,)


@pytest.mark.parametrize(
    "y, num_classes, match",
    [
        (np.array(1), 3, r"received shape \(\) \(rank 0\)"),
        (np.zeros((4, 3, 1)), 3, r"received shape \(4, 3, 1\) \(rank 3\)"),
        (np.array([0.0, 1.5]), 3, r"whole numbers; received \[1.5\]"),
        (np.array([0.0, np.nan]), 3, "whole numbers"),
        (np.array([0, -1]), 3, r"Class ids must be \[0, 3\).*received ids in \[-1, 0\]"),
        (np.array([[0], [3]]), 3, r"Class ids must be \[0, 3\) \(the model has 3 classes\).*\[0, 3\]"),
        (np.array([-2, 1]), None, r"Class ids must be >= 0"),
        (np.eye(4)[[0, 1]], 3, r"one-hot / soft rows of 4 classes.*the model has 3 classes.*to_categorical"),
        (-np.eye(3)[[0, 1]], 3, "must be non-negative"),
        (np.array([[np.nan, 1.0, 0.0]]), 3, "must be finite"),
        (np.zeros((2, 0)), None, "width 0"),
        (np.array(["a", "b"]), 3, "must be numbers"),
        (IDS, 0, "`num_classes` must be None or an int >= 1"),
    ],
)
def test_class_ids_refuses_malformed_labels(y, num_classes, match):
    with pytest.raises(ValueError, match=match):
        labels.class_ids(y, num_classes)


# --- in-graph helpers ------------------------------------------------------------------------------


def _logits(batch=len(IDS), classes=CLASSES, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(batch, classes)).astype("float32"))


def test_ids_tensor_and_cross_entropy_agree_for_every_form():
    logits = _logits()
    expected_loss = tf.nn.sparse_softmax_cross_entropy_with_logits(IDS, logits).numpy()
    losses = []
    for name, y in _forms(IDS).items():
        ids = labels.ids_tensor(tf.constant(y), logits)
        assert ids.dtype == tf.int32 and ids.shape == (len(IDS),), name
        np.testing.assert_array_equal(ids.numpy(), IDS)
        losses.append(labels.cross_entropy(tf.constant(y), logits).numpy())
        np.testing.assert_allclose(losses[-1], expected_loss, rtol=1e-6)
    for loss in losses[1:]:
        np.testing.assert_array_equal(loss, losses[0])  # bit-identical across the forms


def test_cross_entropy_gives_identical_gradients_for_ids_and_one_hot():
    logits = _logits()

    def gradient(y):
        with tf.GradientTape() as tape:
            tape.watch(logits)
            loss = tf.reduce_sum(labels.cross_entropy(tf.constant(y), logits))
        return tape.gradient(loss, logits).numpy()

    grads = [gradient(y) for y in _forms(IDS).values()]
    for grad in grads[1:]:
        np.testing.assert_array_equal(grad, grads[0])


def test_cross_entropy_takes_soft_rows():
    logits = _logits()
    soft = 0.8 * np.eye(CLASSES, dtype="float32")[IDS] + 0.2 / CLASSES
    expected = -np.sum(soft * tf.nn.log_softmax(logits).numpy(), axis=-1)
    np.testing.assert_allclose(labels.cross_entropy(tf.constant(soft), logits).numpy(), expected, rtol=1e-5)


def test_default_attack_loss_attacks_class_zero_with_n_by_1_labels():
    # The old rank rule read ids [N, 1] as one-hot rows: class 0 had a zero loss (no attack).
    logits = _logits()
    loss = attacks.common.default_loss(tf.constant(IDS[:, None]), logits).numpy()
    assert np.all(loss[IDS == 0] > 0)
    np.testing.assert_array_equal(loss, attacks.common.default_loss(tf.constant(IDS), logits).numpy())


def test_unknown_label_width_is_decided_at_run_time():
    logits = _logits()
    spec = [tf.TensorSpec([None, None], tf.float32)]
    ids_fn = tf.function(lambda y: labels.ids_tensor(y, logits), input_signature=spec)
    loss_fn = tf.function(lambda y: labels.cross_entropy(y, logits), input_signature=spec)
    expected = labels.cross_entropy(tf.constant(IDS), logits).numpy()
    for y in (IDS[:, None].astype("float32"), np.eye(CLASSES, dtype="float32")[IDS]):
        np.testing.assert_array_equal(ids_fn(tf.constant(y)).numpy(), IDS)
        np.testing.assert_allclose(loss_fn(tf.constant(y)).numpy(), expected, rtol=1e-6)
    with pytest.raises(tf.errors.InvalidArgumentError, match="one column per class"):
        loss_fn(tf.zeros([len(IDS), CLASSES + 1]))


@pytest.mark.parametrize(
    "shape, match",
    [
        ([8, 3, 1], r"received shape \(8, 3, 1\) \(rank 3\) for logits of 3 classes"),
        ([8, 4], r"one-hot / soft rows of 4 classes.*the logits have 3 classes"),
        ([], r"rank 0"),
    ],
)
def test_in_graph_helpers_refuse_bad_shapes_at_trace_time(shape, match):
    logits = _logits()
    for fn in (labels.ids_tensor, labels.cross_entropy):
        with pytest.raises(ValueError, match=match):
            fn(tf.zeros(shape), logits)
        with pytest.raises(ValueError, match=match):
            tf.function(lambda y, fn=fn: fn(y, logits))(tf.zeros(shape))


def test_in_graph_helpers_refuse_unknown_rank():
    traced = tf.function(lambda y: labels.ids_tensor(y, _logits()), input_signature=[tf.TensorSpec(None, tf.int64)])
    with pytest.raises(ValueError, match="unknown rank"):
        traced.get_concrete_function()


# --- attacks ----------------------------------------------------------------------------------------


def _classifier(classes=CLASSES, features=6, seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((features,))
    h = keras.layers.Dense(12, activation="tanh")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(classes)(h))
    return lambda t: model(t, training=False)


def _inputs(batch=len(IDS), features=6, seed=1):
    return np.random.default_rng(seed).random((batch, features)).astype("float32")


def _same_for_every_form(attack, ids=IDS, classes=CLASSES):
    results = {}
    for name, y in _forms(ids, classes).items():
        keras.utils.set_random_seed(0)
        results[name] = np.asarray(attack(tf.constant(y)))
    for name, result in results.items():
        np.testing.assert_array_equal(result, results["ids"], err_msg=name)
    return results["ids"]


@pytest.mark.parametrize("random_start", [False, True])
@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_pgd_gives_identical_examples_for_every_label_form(random_start, norm):
    model_fn, x = _classifier(), _inputs()
    x_adv = _same_for_every_form(
        lambda y: attacks.pgd(
            model_fn, x, y, eps=0.2, steps=5, step_size=0.05, norm=norm, random_start=random_start, seed=3
        )
    )
    assert np.abs(x_adv - x).max() > 0  # every form attacks, class 0 included
    traced = tf.function(lambda y: attacks.pgd(model_fn, x, y, eps=0.2, steps=5, step_size=0.05, random_start=False))
    _same_for_every_form(traced)


def test_fgsm_gives_identical_examples_for_every_label_form():
    model_fn, x = _classifier(), _inputs()
    x_adv = _same_for_every_form(lambda y: attacks.fgsm(model_fn, x, y, eps=0.1))
    assert np.all(np.abs(x_adv - x).max(axis=1) > 0)


@pytest.mark.parametrize("loss, targeted", [("ce", False), ("dlr", False), ("ce", True), ("dlr", True)])
def test_apgd_gives_identical_examples_for_every_label_form(loss, targeted):
    classes = 5
    ids = np.arange(len(IDS)) % classes
    model_fn, x = _classifier(classes), _inputs()
    target = (ids + 1) % classes if targeted else None
    reference = _same_for_every_form(
        lambda y: attacks.apgd(model_fn, x, y, eps=0.2, steps=6, loss=loss, target=target, seed=3),
        ids, classes,
    )
    assert np.abs(reference - x).max() > 0
    if targeted:  # targets, too, may be ids [N, 1] or one-hot rows
        for name, form in _forms(target, classes).items():
            keras.utils.set_random_seed(0)
            x_adv = attacks.apgd(model_fn, x, ids, eps=0.2, steps=6, loss=loss, target=form, seed=3).numpy()
            np.testing.assert_array_equal(x_adv, reference, err_msg=name)


def test_apgd_targeted_and_dlr_loss_take_every_label_form():
    classes = 5
    ids = np.arange(len(IDS)) % classes
    model_fn, x = _classifier(classes), _inputs()
    _same_for_every_form(
        lambda y: attacks.apgd_targeted(model_fn, x, y, eps=0.2, steps=4, target_classes=2, seed=3), ids, classes
    )
    logits = model_fn(x)
    _same_for_every_form(lambda y: attacks.dlr_loss(logits, y), ids, classes)


def test_square_gives_identical_examples_for_every_label_form():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 1))
    model = keras.Model(inputs, keras.layers.Dense(CLASSES)(keras.layers.Flatten()(inputs)))
    x = np.random.default_rng(0).random((len(IDS), 6, 6, 1)).astype("float32")
    _same_for_every_form(lambda y: attacks.square(lambda t: model(t), x, y, eps=0.2, queries=20, seed=1))


@pytest.mark.parametrize(
    "y, match",
    [
        (np.zeros((len(IDS), CLASSES, 1)), "rank 3"),
        (np.eye(CLASSES + 1, dtype="float32")[IDS], "rows of 4 classes.*the logits have 3 classes"),
    ],
)
@pytest.mark.parametrize("attack", ["pgd", "fgsm", "apgd"])
def test_attacks_refuse_malformed_labels(y, match, attack):
    model_fn, x = _classifier(), _inputs()
    run = {
        "pgd": lambda: attacks.pgd(model_fn, x, y, eps=0.1, steps=2, step_size=0.05),
        "fgsm": lambda: attacks.fgsm(model_fn, x, y, eps=0.1),
        "apgd": lambda: attacks.apgd(model_fn, x, y, eps=0.1, steps=2),
    }[attack]
    with pytest.raises(ValueError, match=match):
        run()


def test_attacks_refuse_out_of_range_ids_at_run_time():
    model_fn, x = _classifier(), _inputs()
    traced = tf.function(lambda y: attacks.pgd(model_fn, x, y, eps=0.1, steps=2, step_size=0.05))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"whole numbers in \[0, classes\)"):
        traced(tf.constant(IDS + CLASSES))
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"whole numbers in \[0, classes\)"):
        attacks.apgd(model_fn, x, IDS - 1, eps=0.1, steps=2)


# --- adversarial fit ----------------------------------------------------------------------------------


def _fit(y, loss, epochs=2):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(12, name="fc1")(inputs)
    h = keras.layers.Activation("tanh")(keras.layers.BatchNormalization(name="bn")(h))
    smart = keras_smart.convert(keras.Model(inputs, keras.layers.Dense(CLASSES, name="fc2")(h)), "smart")
    keras_smart.design_masks(smart, score="random", density=(0.6, 0.6), seed=0)
    smart.compile(keras.optimizers.Adam(1e-2), loss)
    x = np.random.default_rng(0).random((len(y), 6)).astype("float32")
    callback = keras_smart.callbacks.AdversarialCallback(attack=keras_smart.AttackConfig(eps=0.1, steps=2))
    keras.utils.set_random_seed(0)
    return smart.fit(x, y, batch_size=8, epochs=epochs, shuffle=False, verbose=0, callbacks=[callback]).history


def test_adversarial_fit_histories_match_for_every_label_form():
    ids = np.arange(24) % CLASSES
    sparse = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    dense = keras.losses.CategoricalCrossentropy(from_logits=True)
    histories = {
        name: _fit(y, dense if name == "one_hot" else sparse) for name, y in _forms(ids).items()
    }
    reference = histories["ids"]
    assert len(reference["loss"]) == 2 and "adv_accuracy" in reference
    for name, history in histories.items():
        for key in ("loss", "adv_accuracy"):
            np.testing.assert_allclose(history[key], reference[key], atol=1e-5, err_msg=f"{name} {key}")


@pytest.mark.parametrize(
    "y, loss, match",
    [
        (np.zeros((16, CLASSES, 1)), "sparse_categorical_crossentropy", "rank 3"),
        (np.eye(CLASSES + 1, dtype="float32")[np.arange(16) % CLASSES], "categorical_crossentropy",
         "rows of 4 classes.*the logits have 3 classes"),
    ],
)
def test_adversarial_fit_refuses_malformed_labels(y, loss, match):
    with pytest.raises(ValueError, match=match):
        _fit(y, loss, epochs=1)


# --- tradeoff_accuracies ---------------------------------------------------------------------------


def _smart_mlp():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(12, activation="tanh", name="fc1")(inputs)
    smart = keras_smart.convert(keras.Model(inputs, keras.layers.Dense(CLASSES, name="fc2")(h)), "smart")
    keras_smart.design_masks(smart, score="random", density=(0.6, 0.6), seed=0)
    return smart


@pytest.mark.parametrize("kind", ["fgsm", "pgd"])
def test_tradeoff_accuracies_are_the_same_for_every_label_form(kind):
    smart = _smart_mlp()
    x = np.random.default_rng(0).random((10, 6)).astype("float32")
    ids = np.arange(10) % CLASSES
    attack = keras_smart.AttackConfig(kind=kind, eps=0.05, **({"steps": 3, "random_start": False} if kind == "pgd" else {}))
    results = {
        name: keras_smart.callbacks.tradeoff_accuracies(smart, x, y, (0.0, 1.0), attack, batch_size=4)
        for name, y in _forms(ids).items()
    }
    assert results["ids_n1"] == results["ids"] and results["one_hot"] == results["ids"]


@pytest.mark.parametrize(
    "y, match",
    [
        (np.arange(10) % CLASSES + 1, r"Class ids must be \[0, 3\) \(the model has 3 classes\)"),
        (np.eye(CLASSES + 1, dtype="float32")[np.arange(10) % CLASSES], "rows of 4 classes.*the model has 3"),
        (np.zeros((10, CLASSES, 1)), "rank 3"),
        (np.arange(9) % CLASSES, "`x` holds 10 examples but `y` holds 9 labels"),
    ],
)
def test_tradeoff_accuracies_refuse_malformed_labels_up_front(y, match):
    smart = _smart_mlp()
    keras_smart.set_tradeoff(smart, 0.4)
    x = np.random.default_rng(0).random((10, 6)).astype("float32")
    with pytest.raises(ValueError, match=match):
        keras_smart.callbacks.tradeoff_accuracies(smart, x, y, (0.0, 1.0), keras_smart.AttackConfig(kind="fgsm", eps=0.05))
    assert keras_smart.get_tradeoff(smart) == pytest.approx(0.4)
