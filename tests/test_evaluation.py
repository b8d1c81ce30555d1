"""evaluate_tradeoff: report structure and invariants, gradient-masking checks, randomness, ART adapter, errors."""

import json
import random
import sys
import warnings

import numpy as np
import pytest
import tensorflow as tf

import keras_smart
from keras_smart import evaluation
from tests import models
from tests.models import keras

EPS = 0.1
# Small but complete: every part of the suite runs, with fewer steps and queries than AutoAttack's.
SMALL = {"apgd-ce": {"steps": 20}, "apgd-dlr": {"steps": 10, "target_classes": 3}, "square": {"queries": 200}}
ATTACKS = ("fgsm", "pgd20", "autoattack")


def _digits_cnn():
    inputs = keras.Input((28, 28, 1))
    h = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv1")(inputs)
    h = keras.layers.BatchNormalization(momentum=0.9, name="bn1")(h)
    h = keras.layers.ReLU()(h)
    h = keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv2")(h)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(keras.layers.Flatten()(h)), name="digits")


@pytest.fixture(scope="module")
def smart():
    """A SMART model trained once-for-all (PGD-3 at eps 0.1) on 1,500 digits; the paths' masks differ."""
    keras.utils.set_random_seed(0)
    x, y = keras_smart.data.digits("train")
    model = keras_smart.convert(_digits_cnn(), "smart")
    keras_smart.design_masks(model, score="magnitude", density=(0.8, 0.6))
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=EPS, steps=3), tradeoffs=(0.0, 1.0), clean_share=0.5
    )
    model.fit(x[:1500], y[:1500], batch_size=64, epochs=2, verbose=0, callbacks=[callback])
    return model


@pytest.fixture(scope="module")
def test_digits():
    x, y = keras_smart.data.digits("test")
    return x[:200], y[:200]


@pytest.fixture(scope="module")
def report(smart, test_digits):
    keras_smart.set_tradeoff(smart, 0.3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = evaluation.evaluate_tradeoff(
            smart, test_digits, tradeoffs=(1.0, 0.0), attacks=ATTACKS, eps=EPS, attack_options=SMALL, progress=False
        )
    masking = [w for w in caught if issubclass(w.category, evaluation.GradientMaskingWarning)]
    return result, masking, keras_smart.get_tradeoff(smart)


def test_report_json_has_the_documented_shape(report, smart):
    result, _, _ = report
    data = json.loads(result.to_json())
    assert set(data) == {"settings", "rows", "warnings"}
    assert [row["tradeoff"] for row in data["rows"]] == [0.0, 1.0]  # sorted
    for row in data["rows"]:
        assert list(row) == ["tradeoff", "clean", "fgsm", "pgd20", "autoattack", "worst_case", "nonzero", "macs"]
    settings = data["settings"]
    assert settings["eps"] == EPS and settings["norm"] == "linf" and settings["examples"] == 200
    assert settings["tradeoffs"] == [0.0, 1.0] and "lambdas" not in settings
    assert settings["method"] == "smart (switch)"
    assert settings["randomness"] == {"mode": "deterministic"}
    pgd = settings["attacks"]["pgd20"]
    assert pgd["steps"] == 20 and pgd["step_size"] == pytest.approx(2.5 * EPS / 20) and pgd["random_start"]
    autoattack = settings["attacks"]["autoattack"]
    assert autoattack["components"] == ["apgd-ce", "apgd-dlr", "square"]
    assert autoattack["parts"]["apgd-dlr"]["target_classes"] == 3 and autoattack["parts"]["square"]["queries"] == 200
    assert settings["masking_checks"]["large_eps"]["eps"] == 0.5


def test_a_report_saved_with_lambdas_reads_back_with_tradeoffs(report):
    """Reports written before the rename name the trade-offs "lambdas"; they still load."""
    result, _, _ = report
    data = result.to_dict()
    data["settings"] = {("lambdas" if key == "tradeoffs" else key): value for key, value in data["settings"].items()}
    old = evaluation.TradeoffReport.from_json(json.dumps(data))
    assert "lambdas" not in old.settings and old.settings["tradeoffs"] == [0.0, 1.0]
    assert old == evaluation.TradeoffReport.from_json(result.to_json())


def test_report_records_the_fingerprint_of_the_state_it_measured(report, smart):
    result, _, _ = report
    fingerprint = evaluation.model_fingerprint(smart)
    assert len(fingerprint) == 16 and int(fingerprint, 16) >= 0
    assert result.settings["model_fingerprint"] == fingerprint == result.fingerprint
    assert json.loads(result.to_json())["settings"]["model_fingerprint"] == fingerprint
    assert evaluation.TradeoffReport.from_json(result.to_json()).fingerprint == fingerprint
    assert evaluation.TradeoffReport(settings={}, rows=()).fingerprint is None


def test_worst_case_is_never_above_clean_or_any_attack(report):
    result, _, _ = report
    for row in result.rows:
        for name in ATTACKS:
            assert row["worst_case"] <= row[name] <= row["clean"]


def test_autoattack_is_at_most_pgd20_on_a_trained_model(report):
    result, _, _ = report
    robust = result.rows[1]
    assert robust["pgd20"] > 0.3, "the adversarial path should be robust, or the comparison says nothing"
    assert robust["fgsm"] >= robust["pgd20"]
    for row in result.rows:
        assert row["autoattack"] <= row["pgd20"]


def test_nonzero_and_macs_are_those_of_the_path_each_tradeoff_selects(report, smart):
    result, _, _ = report
    counts = keras_smart.count_nonzero(smart)
    assert counts.clean != counts.adv
    assert (result.rows[0]["nonzero"], result.rows[0]["macs"]) == (counts.clean, counts.macs_clean)
    assert (result.rows[1]["nonzero"], result.rows[1]["macs"]) == (counts.adv, counts.macs_adv)
    assert result.settings["counts"]["paths"] == {"0": "clean", "1": "adv"}


def test_the_models_tradeoff_is_restored(report):
    _, _, after = report
    assert after == pytest.approx(0.3)


def test_no_masking_warning_on_an_adversarially_trained_model(report):
    result, masking, _ = report
    assert result.warnings == () and not masking
    assert all(v == 0.0 for v in result.settings["masking_checks"]["large_eps"]["accuracy"].values())


def test_no_weak_attack_alarm_on_an_adversarially_trained_model(report):
    result, _, _ = report
    assert result.settings["masking_checks"]["weak_attack_margin"] == evaluation.WEAK_ATTACK_MARGIN
    for row in result.rows:
        assert row["pgd20"] <= row["autoattack"] + evaluation.WEAK_ATTACK_MARGIN, row
    assert not any("too weak" in w for w in result.warnings)


def test_markdown_and_plot(report, tmp_path):
    result, _, _ = report
    table = result.to_markdown()
    assert "| λ | clean | fgsm | pgd20 | autoattack | worst case | non-zeros | non-zero MACs |" in table
    assert "with a non-zero weight" in table and "executed_macs" in table, "the caption says which MACs"
    assert table.count("\n| 0 |") == 1 and table.count("\n| 1 |") == 1
    assert "PGD-20, 20 steps" in table
    assert "AutoAttack = APGD-CE, 20 steps then APGD-T (targeted DLR), 10 steps, 3 target classes then " in table
    assert "200 queries" in table
    path = result.plot(tmp_path / "frontier.png", baselines={"standard": (0.99, 0.0), "PGD-AT": (0.95, 0.7)})
    data = open(path, "rb").read()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    with pytest.raises(ValueError, match="fractions"):
        result.plot(tmp_path / "bad.png", baselines={"percent": (99.0, 70.0)})


# --- plain models and gradient masking ------------------------------------------------------------


class _Quantise(keras.layers.Layer):
    """Rounds inputs to 5 grey levels with no gradient: a textbook way to mask gradients."""

    def call(self, inputs):
        return tf.stop_gradient(tf.round(inputs * 4.0) / 4.0)


@pytest.fixture(scope="module")
def plain_robust(smart):
    return keras_smart.strip(smart, tradeoff=1.0)


@pytest.mark.slow
def test_plain_adversarially_trained_model_one_row_and_no_warnings(plain_robust, test_digits):
    x, y = test_digits
    with warnings.catch_warnings():
        warnings.simplefilter("error", evaluation.GradientMaskingWarning)
        result = evaluation.evaluate_tradeoff(
            plain_robust, (x[:150], y[:150]), attacks=("fgsm", "pgd10", "autoattack"), eps=EPS,
            attack_options=SMALL, progress=False,
        )
    assert len(result.rows) == 1 and result.rows[0]["tradeoff"] is None
    assert result.warnings == ()
    assert result.rows[0]["autoattack"] <= result.rows[0]["pgd10"] < result.rows[0]["fgsm"]
    assert result.settings["method"] == "plain" and result.settings["tradeoffs"] is None


@pytest.mark.slow
def test_masking_warnings_fire_on_a_gradient_masked_model(plain_robust, test_digits):
    inputs = keras.Input((28, 28, 1))
    masked = keras.Model(inputs, plain_robust(_Quantise()(inputs)), name="quantised")
    x, y = test_digits
    with pytest.warns(evaluation.GradientMaskingWarning):
        result = evaluation.evaluate_tradeoff(
            masked, (x[:150], y[:150]), attacks=("fgsm", "pgd10", "autoattack"), eps=2 * EPS,
            attack_options=SMALL, progress=False,
        )
    row = result.rows[0]
    assert row["fgsm"] == row["clean"]  # zero gradients: FGSM cannot move
    text = " ".join(result.warnings)
    assert "gradient-free Square attack broke" in text
    assert "still leaves" in text  # the large-eps check: PGD cannot reach chance
    assert row["autoattack"] < row["pgd10"] - 0.05  # and the worst case tells the truth


def test_masking_findings_name_the_offending_attacks():
    options = evaluation.DEFAULT_ATTACK_OPTIONS
    findings = evaluation.masking_findings("λ=1", {"fgsm": 0.40, "pgd20": 0.50}, ["fgsm", "pgd20"], options)
    assert len(findings) == 1 and "pgd20" in findings[0] and "fgsm" in findings[0]
    assert evaluation.masking_findings("λ=1", {"fgsm": 0.50, "pgd20": 0.40}, ["fgsm", "pgd20"], options) == []
    names = ["pgd20", "autoattack"]
    assert len(evaluation.masking_findings("λ=1", {"pgd20": 0.4, "autoattack": 0.45}, names, options)) == 1
    assert evaluation.masking_findings("m", {"pgd20": 0.4}, ["pgd20"], options, broken_by_square_only=0.04) == []
    assert len(evaluation.masking_findings("m", {"pgd20": 0.4}, ["pgd20"], options, broken_by_square_only=0.06)) == 1
    assert evaluation.masking_findings("m", {"pgd20": 0.4}, ["pgd20"], options, large_eps=(0.5, 0.15, 0.1)) == []
    assert len(evaluation.masking_findings("m", {"pgd20": 0.4}, ["pgd20"], options, large_eps=(0.5, 0.3, 0.1))) == 1


def test_weak_pgd_finding_names_the_attack_both_numbers_and_the_gap():
    options = evaluation.DEFAULT_ATTACK_OPTIONS
    names = ["pgd20", "apgd-ce"]
    accuracies = {"pgd20": 0.62, "apgd-ce": 0.60}
    assert evaluation.masking_findings("λ=1", accuracies, names, options) == []  # no worst case: not checked
    [finding] = evaluation.masking_findings("λ=1", accuracies, names, options, worst_case=0.48)
    assert finding.startswith("λ=1: pgd20 reports 62.0% accuracy, 14.0 points above the worst case")
    assert "(48.0%)" in finding and "too weak to judge this model" in finding and "AutoAttack" in finding
    assert evaluation.masking_findings("λ=1", {"pgd20": 0.57, "apgd-ce": 0.5}, names, options, worst_case=0.48) == []
    # With autoattack listed, PGD is held against it.
    names = ["pgd10", "pgd40", "autoattack"]
    accuracies = {"pgd10": 0.70, "pgd40": 0.55, "autoattack": 0.50}
    [finding] = evaluation.masking_findings("m", accuracies, names, options, worst_case=0.30)
    assert "pgd10 reports 70.0%" in finding and "20.0 points above autoattack (50.0%)" in finding


@pytest.mark.slow
def test_weak_pgd_alarm_fires_when_cross_entropy_gradients_vanish(test_digits):
    """The trained digits CNN with logits times 1e4: float32 softmax saturates, so CE gradients are exactly 0
    and PGD-20 leaves clean accuracy standing, while the scale-invariant APGD-DLR still breaks the model."""
    model = models.trained_digits_cnn(examples=1000)
    inputs = keras.Input((28, 28, 1))
    scaled = keras.Model(inputs, keras.layers.Rescaling(1e4)(model(inputs)), name="scaled_logits")
    x, y = test_digits
    with pytest.warns(evaluation.GradientMaskingWarning) as caught:
        result = evaluation.evaluate_tradeoff(
            scaled, (x[:100], y[:100]), attacks=("pgd20", "apgd-dlr"), eps=EPS, attack_options=SMALL, progress=False
        )
    row = result.rows[0]
    assert row["clean"] > 0.7 and row["pgd20"] >= row["clean"] - 0.02  # PGD barely moves a prediction
    assert row["pgd20"] > row["worst_case"] + evaluation.WEAK_ATTACK_MARGIN
    [alarm] = [w for w in result.warnings if "too weak" in w]
    assert alarm in [str(w.message) for w in caught]
    gap = round(100 * (row["pgd20"] - row["worst_case"]), 1)
    assert f"{100 * row['pgd20']:.1f}%" in alarm and f"({100 * row['worst_case']:.1f}%)" in alarm
    assert f"{gap:.1f} points above the worst case" in alarm


# --- the recorded cost is the counted cost ----------------------------------------------------------


class _CountPasses(keras.layers.Layer):
    """The identity, counting what passes through it (a plain object holds the counters: no weights)."""

    def __init__(self, passes, **kwargs):
        super().__init__(**kwargs)
        self.passes = passes

    def call(self, inputs):
        return self.passes.count(inputs)

    def compute_output_shape(self, input_shape):
        return input_shape


def _counted(model):
    passes = models.Passes()
    inputs = keras.Input((28, 28, 1))
    return keras.Model(inputs, model(_CountPasses(passes)(inputs)), name="counted"), passes


def _extra_passes(model, passes, data, attack, **kwargs):
    """The report with ("fgsm", attack) and the passes it took beyond the report with ("fgsm",) alone.

    Every listed attack runs on the same clean-correct examples, so the difference is the attack's own cost.
    """
    run = lambda attacks: passes.during(lambda: evaluation.evaluate_tradeoff(  # noqa: E731
        model, data, attacks=attacks, eps=EPS, attack_options=SMALL, progress=False, **kwargs
    ))
    _, forward, gradient = run(("fgsm",))
    report, more_forward, more_gradient = run(("fgsm", attack))
    return report, more_forward - forward, more_gradient - gradient


@pytest.mark.parametrize("attack", ["pgd5", "apgd-ce", "square"])
def test_the_recorded_cost_of_an_attack_is_the_number_of_passes_it_takes(plain_robust, test_digits, attack):
    model, passes = _counted(plain_robust)
    x, y = test_digits
    report, forward, gradient = _extra_passes(model, passes, (x[:40], y[:40]), attack)
    row = report.rows[0]
    assert row[attack] > 0, "a batch where every example breaks stops early: the count would be below the cost"
    attacked = round(row["clean"] * report.settings["examples"])
    recorded = report.settings["attacks"][attack]
    assert forward == attacked * recorded["forward_passes"]
    assert gradient == attacked * recorded["gradient_passes"]
    assert forward > 0 and (gradient > 0) == (attack != "square")


def test_the_recorded_cost_counts_every_draw_of_a_randomised_model(plain_robust, test_digits):
    noisy = keras_smart.convert(plain_robust, "float", noise_init=0.5)
    keras_smart.set_tradeoff(noisy, 1.0)
    model, passes = _counted(noisy)
    x, y = test_digits
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", evaluation.GradientMaskingWarning)  # PGD-3 on 24 noisy examples
        report, forward, gradient = _extra_passes(model, passes, (x[:24], y[:24]), "pgd3", eot_samples=3)
    assert report.settings["randomness"]["mode"] == "eot"
    attacked = round(report.rows[0]["clean"] * report.settings["examples"])
    recorded = report.settings["attacks"]["pgd3"]
    assert recorded["eot_samples"] == 3 and attacked > 0
    assert (forward, gradient) == (attacked * recorded["forward_passes"], attacked * recorded["gradient_passes"])


# --- data forms, randomness ---------------------------------------------------------------------------


def test_arrays_one_hot_labels_and_datasets_give_the_same_rows(plain_robust, test_digits):
    x, y = test_digits
    x, y = x[:64], y[:64]
    run = lambda data: evaluation.evaluate_tradeoff(  # noqa: E731
        plain_robust, data, attacks=("fgsm",), eps=EPS, progress=False
    ).rows
    expected = run((x, y))
    assert run((x, np.eye(10, dtype="float32")[y])) == expected
    assert run(tf.data.Dataset.from_tensor_slices((x, y)).batch(20)) == expected
    assert run(tf.data.Dataset.from_tensor_slices((x, y))) == expected  # single examples
    limited = evaluation.evaluate_tradeoff(
        plain_robust, (x, y), attacks=("fgsm",), eps=EPS, max_examples=10, progress=False
    )
    assert limited.settings["examples"] == 10


def test_noisy_models_state_their_randomness_and_reproduce_with_a_seed(plain_robust, test_digits):
    noisy = keras_smart.convert(plain_robust, "float", noise_init=0.5)
    x, y = test_digits
    data = (x[:48], y[:48])
    run = lambda **kw: evaluation.evaluate_tradeoff(  # noqa: E731
        noisy, data, tradeoffs=(0.0, 1.0), attacks=("fgsm",), eps=EPS, progress=False, **kw
    )
    eot = run(eot_samples=2, seed=3)
    assert eot.settings["randomness"]["mode"] == "eot"
    assert eot.settings["randomness"]["eot_samples"] == 2 and eot.settings["randomness"]["randomised_rows"] == [1.0]
    assert run(eot_samples=2, seed=3).rows == eot.rows  # a fixed seed reproduces the noise
    fixed = run(eot_samples=1, seed=3)
    assert fixed.settings["randomness"]["mode"] == "fixed_seed"
    assert run(noise="expected").settings["randomness"]["mode"] == "expected_noise"


def test_evaluation_leaves_the_global_random_state_as_it_found_it(plain_robust, test_digits):
    """Draws after an evaluation of a randomised model are those the same seeds give without it."""
    x, y = test_digits

    def draws_after(evaluate):
        noisy = keras_smart.convert(plain_robust, "float", noise_init=0.5)  # the same fresh model both times
        tf.random.set_seed(11)
        tf.random.set_global_generator(tf.random.Generator.from_seed(11))
        np.random.seed(11)
        random.seed(11)
        first = tf.random.uniform([3]).numpy().tolist()
        if evaluate:
            evaluation.evaluate_tradeoff(
                noisy, (x[:16], y[:16]), tradeoffs=(1.0,), attacks=("fgsm",), eps=EPS, eot_samples=2, progress=False
            )
        return [
            first,
            tf.random.uniform([3]).numpy().tolist(),
            tf.random.normal([3], seed=5).numpy().tolist(),
            tf.random.get_global_generator().normal([3]).numpy().tolist(),
            np.random.random(3).tolist(),
            random.random(),
        ]

    assert draws_after(evaluate=True) == draws_after(evaluate=False)


# --- as_art_classifier --------------------------------------------------------------------------------


def test_art_classifier_is_fixed_at_its_tradeoff(smart, test_digits):
    pytest.importorskip("art")
    x = test_digits[0][:16]
    classifier = evaluation.as_art_classifier(smart, tradeoff=1.0)
    keras_smart.set_tradeoff(smart, 1.0)
    adversarial_path = smart(x, training=False).numpy()
    keras_smart.set_tradeoff(smart, 0.0)
    clean_path = smart(x, training=False).numpy()
    np.testing.assert_allclose(classifier.predict(x), adversarial_path, atol=1e-5)
    assert np.abs(classifier.predict(x) - clean_path).max() > 1e-3
    assert classifier.nb_classes == 10 and classifier.input_shape == (28, 28, 1)
    loss_gradient = classifier.loss_gradient(x, np.eye(10, dtype="float32")[test_digits[1][:16]])
    assert loss_gradient.shape == x.shape and np.abs(loss_gradient).max() > 0


def test_art_classifier_rejects_a_tradeoff_for_a_plain_model(plain_robust):
    with pytest.raises(ValueError, match="no trade-off"):
        evaluation.as_art_classifier(plain_robust, tradeoff=0.5)


def test_missing_art_says_how_to_install_it(plain_robust, monkeypatch):
    evaluation.art._classifier_class.cache_clear()  # pylint: disable=protected-access
    monkeypatch.setitem(sys.modules, "art.estimators.classification", None)
    try:
        with pytest.raises(ImportError, match=r"pip install keras_smart\[eval\]"):
            evaluation.as_art_classifier(plain_robust)
    finally:
        evaluation.art._classifier_class.cache_clear()  # pylint: disable=protected-access


# --- bad input fails before any work and loses nothing ----------------------------------------------


@pytest.mark.parametrize(
    "kwargs, error, fragment",
    [
        ({"tradeoffs": (0.0, 1.5)}, ValueError, r"`tradeoffs\[i\]` must be in \[0, 1\]"),
        ({"tradeoffs": (-0.1,)}, ValueError, r"\[0, 1\]"),
        ({"tradeoffs": ()}, ValueError, "`tradeoffs` is empty"),
        ({"tradeoffs": "0.5"}, TypeError, "`tradeoffs` must be a sequence"),
        ({"lambdas": (0.0,)}, TypeError, "got both `tradeoffs` and its old name `lambdas`"),
        ({"attacks": ("fgsm", "cw")}, ValueError, "Valid names: 'fgsm', 'pgd<K>'"),
        ({"attacks": ("pgd",)}, ValueError, "Unknown attack 'pgd'"),
        ({"attacks": ()}, ValueError, "at least one attack"),
        ({"eps": 0.0}, ValueError, "eps"),
        ({"eps": -0.1}, ValueError, "eps"),
        ({"eps": float("nan")}, ValueError, "eps"),
        ({"eps": "0.1"}, TypeError, "`eps` must be a real number"),
        ({"eps": 2.0}, ValueError, r"`eps` must be below the input range .* = 1 for norm='linf'.*Received: eps=2"),
        ({"eps": 1.0}, ValueError, r"or pass input_range=\(0, 255\)"),
        ({"eps": 28.0, "norm": "l2"}, ValueError, r"sqrt\(d\) \* \(clip_max - clip_min\) = 28 .*d = 784"),
        ({"attack_options": {"apgd-ce": {"stpes": 10}}}, ValueError, "Unknown option"),
        ({"attack_options": {"square": {"p_init": 1.5}}}, ValueError, r"`attack_options\['square'\]\['p_init'\]`"),
        ({"attack_options": {"pgd": {"restarts": True}}}, TypeError, "must be an int >= 1"),
        ({"batch_size": 0}, ValueError, "`batch_size` must be an int >= 1"),
        ({"max_examples": 2.5}, TypeError, "`max_examples` must be an int"),
        ({"seed": 1.5}, TypeError, "`seed` must be an int"),
        ({"eot_samples": 0}, ValueError, "`eot_samples` must be an int >= 1"),
        ({"input_range": (1.0, 0.0)}, ValueError, "`input_range` must be \\(min, max\\) with min < max"),
        ({"noise": "fresh"}, ValueError, "noise"),
        ({"data": "empty"}, ValueError, "empty"),
        ({"data": "empty_dataset"}, ValueError, "empty"),
        ({"data": "pixels"}, ValueError, "input_range"),
        ({"data": "labels"}, ValueError, r"Class ids must be \[0, 10\)"),
    ],
)
def test_bad_input_fails_clearly_before_any_work(smart, test_digits, kwargs, error, fragment):
    x, y = test_digits
    data = {
        "empty": (x[:0], y[:0]),
        "empty_dataset": tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(4),
        "pixels": (x[:4] * 255.0, y[:4]),
        "labels": (x[:4], y[:4] + 10),
    }.get(kwargs.pop("data", None), (x[:4], y[:4]))
    keras_smart.set_tradeoff(smart, 0.7)
    settings = {"eps": EPS, "attacks": ("fgsm",), "tradeoffs": (0.0, 1.0), "progress": False, **kwargs}
    with pytest.raises(error, match=fragment):
        evaluation.evaluate_tradeoff(smart, data, **settings)
    assert keras_smart.get_tradeoff(smart) == pytest.approx(0.7)


def test_plain_models_take_no_tradeoffs(plain_robust, test_digits):
    with pytest.raises(ValueError, match="plain Keras model has no trade-off: pass tradeoffs=None"):
        evaluation.evaluate_tradeoff(plain_robust, test_digits, tradeoffs=(0.0, 1.0), eps=EPS, progress=False)


def test_lambdas_is_the_deprecated_name_of_tradeoffs(smart, test_digits):
    x, y = test_digits
    data, settings = (x[:16], y[:16]), {"attacks": ("fgsm",), "eps": EPS, "progress": False}
    with pytest.warns(DeprecationWarning, match=r"evaluate_tradeoff\(lambdas=\.\.\.\)` is deprecated.*`tradeoffs=`"):
        old = evaluation.evaluate_tradeoff(smart, data, lambdas=(1.0,), **settings)
    new = evaluation.evaluate_tradeoff(smart, data, tradeoffs=(1.0,), **settings)
    assert old.settings["tradeoffs"] == [1.0] and old.rows == new.rows


def test_a_failure_mid_sweep_restores_the_tradeoff(smart, test_digits, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("attack failed")

    monkeypatch.setattr(evaluation.sweep.Sweep, "attack", broken)  # pylint: disable=protected-access
    keras_smart.set_tradeoff(smart, 0.25)
    with pytest.raises(RuntimeError, match="attack failed"):
        evaluation.evaluate_tradeoff(smart, test_digits, tradeoffs=(1.0,), attacks=("fgsm",), eps=EPS, progress=False)
    assert keras_smart.get_tradeoff(smart) == pytest.approx(0.25)


def test_l2_eps_is_bounded_by_sqrt_d_times_the_input_range():
    """d = 6 inputs in [0, 1]: an L2 ball of radius sqrt(6) reaches every input; just below is evaluated."""
    plain = models.nested_model()
    x = np.random.default_rng(0).random((8, 6)).astype("float32")
    y = np.arange(8) % 2
    with pytest.raises(ValueError, match=r"sqrt\(d\) \* \(clip_max - clip_min\) = 2.44949 for norm='l2'"):
        evaluation.evaluate_tradeoff(plain, (x, y), attacks=("fgsm",), eps=np.sqrt(6.0), norm="l2", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", evaluation.GradientMaskingWarning)  # an untrained model
        result = evaluation.evaluate_tradeoff(plain, (x, y), attacks=("fgsm",), eps=2.4, norm="l2", progress=False)
    assert result.settings["eps"] == 2.4 and result.settings["masking_checks"]["large_eps"]["eps"] == 2.4


def test_fingerprint_is_stable_across_save_load_and_tradeoff_and_changes_with_the_weights(tmp_path):
    smart = keras_smart.convert(models.conv_block_model(), "smart", tradeoff_mode="blend")
    models.randomize_conditional_state(smart)
    fingerprint = evaluation.model_fingerprint(smart)
    keras_smart.set_tradeoff(smart, 0.6)
    assert evaluation.model_fingerprint(smart) == fingerprint, "the trade-off is not part of the fingerprint"
    smart.save(str(tmp_path / "model.keras"))
    loaded = keras.models.load_model(str(tmp_path / "model.keras"))
    assert evaluation.model_fingerprint(loaded) == fingerprint
    x = models.inputs_for(smart, batch=6, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", evaluation.GradientMaskingWarning)
        result = evaluation.evaluate_tradeoff(
            loaded, (x, np.arange(6) % 4), tradeoffs=(0.0, 1.0), attacks=("fgsm",), eps=0.1, progress=False
        )
    assert result.fingerprint == fingerprint == evaluation.model_fingerprint(loaded)  # evaluation moves nothing
    batch_norm = next(w for w in smart.weights if w.name.split(":")[0].endswith("adv_moving_mean"))
    batch_norm.assign(batch_norm.numpy() + 1.0)
    assert evaluation.model_fingerprint(smart) != fingerprint, "batch-norm statistics count"
    keras_smart.pruning.prune(loaded, 0.5)
    assert evaluation.model_fingerprint(loaded) != fingerprint, "pruning changes the kernels and masks"
    other = keras_smart.convert(models.sequential_model(), "smart")
    assert evaluation.model_fingerprint(other) != fingerprint
    with pytest.raises(TypeError, match="keras.Model"):
        evaluation.model_fingerprint("model.keras")
