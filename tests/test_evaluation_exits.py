"""evaluate_tradeoff on a multi-exit model: every column judged by the exit policy, adaptive attacks, cost, errors."""

import json
import warnings

import numpy as np
import pytest

import keras_smart
from keras_smart import evaluation
from keras_smart.evaluation import exits as exit_eval
from keras_smart.evaluation import forward as forward_lib
from keras_smart.evaluation import plan as plan_lib
from tests import models

keras = keras_smart.keras

EPS = 0.1
SQUARE = {"square": {"queries": 100}}
ATTACKS = ("pgd10",)
EXITS = 3
NON_ADAPTIVE = ["exit1", "exit2", "exit3", "average", "max_average"]
ADAPTIVE = ["adaptive_follow", "adaptive_cosine", "adaptive_to_exit1", "adaptive_to_exit2", "adaptive_square"]


def _flat_heads():
    """Exit heads Flatten -> Dense: they learn the digits in a few steps (the default global-pooling head is slower)."""
    made = []

    def head(features, classes):
        made.append(len(made) + 1)
        h = keras.layers.Flatten(name=f"exit_{made[-1]}_flatten")(features)
        return keras.layers.Dense(classes, name=f"exit_{made[-1]}_logits")(h)

    return head


def _multi_exit(width=8, after=("pool1", "pool2"), name="digits_cnn"):
    backbone = keras_smart.backbones.digits_cnn(width=width, name=name)
    return keras_smart.exits.attach(backbone, after=list(after), head=_flat_heads())


@pytest.fixture(scope="module")
def digits():
    x, y = keras_smart.data.digits("train")
    x_test, y_test = keras_smart.data.digits("test")
    return {
        "train": (x[:1000], y[:1000]), "held_out": (x[1000:1400], y[1000:1400]), "test": (x_test[:100], y_test[:100])
    }


@pytest.fixture(scope="module")
def trained(digits):
    """A multi-exit SMART model trained adversarially for 2 epochs on 1,000 digits (PGD-3 at eps 0.1 on the
    average of the exits' losses), and its policy calibrated on 400 held-out digits to 60% of the MACs."""
    keras.utils.set_random_seed(0)
    model = keras_smart.convert(_multi_exit(), "smart")
    model.compile(keras.optimizers.Adam(3e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    callback = keras_smart.callbacks.AdversarialCallback(
        attack=keras_smart.AttackConfig(eps=EPS, steps=3), tradeoffs=(0.0, 1.0), clean_share=0.5,
        exit_attack="average",
    )
    model.fit(*digits["train"], batch_size=32, epochs=2, verbose=0, callbacks=[callback])
    keras_smart.set_tradeoff(model, 1.0)
    policy = keras_smart.exits.calibrate(model, digits["held_out"], budget=0.6)
    return model, policy


@pytest.fixture(scope="module")
def report(trained, digits):
    """The report on 100 test digits at lam 0 and 1, and {attack: [(examples attacked, forward passes, gradient
    passes)]} counted while each attack of the evaluation ran (no numbers change: the counter is the identity)."""
    model, policy = trained
    keras_smart.set_tradeoff(model, 0.3)
    passes, counted = models.Passes(), {}

    class Counted(forward_lib.Forward):
        def __call__(self, x, training=False):
            return super().__call__(passes.count(x), training)

    attack = exit_eval.ExitSweep.attack

    def counting_attack(sweep, name, mask, eot, row):
        correct, forward, gradient = passes.during(lambda: attack(sweep, name, mask, eot, row))
        counted.setdefault(name, []).append((int(mask.sum()), forward, gradient))
        return correct

    with pytest.MonkeyPatch.context() as patch, warnings.catch_warnings(record=True):
        patch.setattr(forward_lib, "Forward", Counted)
        patch.setattr(exit_eval.ExitSweep, "attack", counting_attack)
        warnings.simplefilter("always")
        result = evaluation.evaluate_tradeoff(
            model, digits["test"], policy=policy, tradeoffs=(0.0, 1.0), attacks=ATTACKS, eps=EPS,
            attack_options=SQUARE, progress=False,
        )
    return result, counted, keras_smart.get_tradeoff(model)


def test_rows_hold_every_column_the_policy_cost_and_shares(report, trained):
    result, _, after = report
    model, policy = trained
    columns = NON_ADAPTIVE + ADAPTIVE + ["adaptive", "pgd10"]
    assert result.attacks == columns
    fixed = ["tradeoff", "clean", "worst_case", "nonzero", "macs", "expected_macs", "exit_shares", "exit_macs"]
    for row, tradeoff in zip(result.rows, (0.0, 1.0)):
        assert sorted(row) == sorted(fixed + columns) and row["tradeoff"] == tradeoff
        shares, macs = np.array(row["exit_shares"]), np.array(row["exit_macs"])
        assert shares.shape == (EXITS,) and macs.shape == (EXITS,)
        assert shares.sum() == pytest.approx(1.0) and (shares >= 0).all()
        assert (np.diff(macs) > 0).all()
        assert row["macs"] == pytest.approx(float(shares @ macs))
        assert row["expected_macs"] == pytest.approx(float(shares @ macs) / policy.macs[-1])
    keras_smart.set_tradeoff(model, 1.0)
    robust = result.rows[1]
    assert robust["exit_macs"] == list(keras_smart.exits.exit_macs(model)) == list(policy.macs)
    assert after == pytest.approx(0.3)  # the model's trade-off is restored


def test_the_policys_share_of_clean_exits_and_predictions_are_the_rows(report, trained, digits):
    result, _, _ = report
    model, policy = trained
    keras_smart.set_tradeoff(model, 1.0)
    x, y = digits["test"]
    classes, exit_ids = policy.predict(model, x)
    row = result.rows[1]
    assert row["clean"] == pytest.approx(np.mean(classes == y))
    assert row["exit_shares"] == pytest.approx((np.bincount(exit_ids, minlength=EXITS) / len(x)).tolist())


def test_worst_case_is_never_above_any_column_and_none_above_clean(report):
    result, _, _ = report
    for row in result.rows:
        for name in result.attacks:
            assert row["worst_case"] <= row[name] <= row["clean"], name
        assert row["adaptive"] <= min(row[name] for name in ADAPTIVE)


def test_the_adaptive_attack_is_at_least_as_strong_as_every_non_adaptive_one_on_a_trained_model(report):
    result, _, _ = report
    robust = result.rows[1]
    assert robust["clean"] > 0.8 and min(robust[name] for name in NON_ADAPTIVE) > 0.3, (
        "the model should be robust to the paper's attacks, or the comparison says nothing"
    )
    for row in result.rows:
        assert row["adaptive"] <= min(row[name] for name in NON_ADAPTIVE), row
    assert robust["adaptive"] < max(robust[name] for name in NON_ADAPTIVE)
    assert not any("adaptive attacks" in w for w in result.warnings)


def test_settings_record_the_policy_and_every_attacks_settings_and_cost(report, trained):
    result, _, _ = report
    _, policy = trained
    settings = result.settings
    assert settings["exit_policy"] == json.loads(policy.to_json())
    assert settings["exits"] == EXITS and settings["attack_names"] == list(ATTACKS)
    assert sorted(settings["attacks"]) == ["adaptive_square", "pgd10"]
    pgd = settings["attacks"]["pgd10"]
    assert (pgd["steps"], pgd["step_size"], pgd["random_start"]) == (10, 2.5 * EPS / 10, True)
    assert pgd["columns"]["exit2"] == {"mode": "single", "exit": 2, "forward_passes": 11, "gradient_passes": 10}
    assert pgd["columns"]["adaptive_to_exit1"]["target_exit"] == 1
    assert pgd["columns"]["adaptive_cosine"]["step_schedule"] == "cosine"
    assert pgd["columns"]["adaptive_cosine"]["step_size"] == pytest.approx(2 * EPS)
    assert pgd["columns"]["max_average"] == {"mode": "max_average", "forward_passes": 34, "gradient_passes": 30}
    assert pgd["gradient_passes"] == sum(c["gradient_passes"] for c in pgd["columns"].values())
    assert settings["attacks"]["adaptive_square"]["queries"] == 100
    assert "adaptive_follow" in settings["adaptive"] and "adaptive_square" in settings["adaptive"]


def test_report_json_markdown_and_plot(report, tmp_path):
    result, _, _ = report
    assert evaluation.TradeoffReport.from_json(result.to_json()) == result
    table = result.to_markdown()
    assert "| λ | clean | exit1 | exit2 | exit3 | average | max_average | adaptive_follow |" in table
    assert "| worst case | non-zeros | non-zero MACs | MACs (% of full) | exit shares (%) |" in table
    assert "Exit policy: side exits after pool1, pool2" in table and "60.0% of the MACs" in table
    assert "PGD-10 multi-exit family, 10 steps" in table
    path = result.plot(tmp_path / "frontier.png", robust="adaptive")
    assert open(path, "rb").read()[:8] == b"\x89PNG\r\n\x1a\n"


# --- the recorded cost is the counted cost ----------------------------------------------------------


def test_the_recorded_cost_of_every_column_is_the_number_of_passes_it_takes(report):
    result, counted, _ = report
    attacks = result.settings["attacks"]
    checked = 0
    for name, runs in counted.items():
        if "/" not in name:
            continue  # Square stops early per example; the large-eps check is not reported as a column
        family, column = name.split("/")
        recorded = attacks[family]["columns"][column]
        for attacked, forward, gradient in runs:
            assert forward == attacked * recorded["forward_passes"], name
            assert gradient == attacked * recorded["gradient_passes"], name
            checked += attacked > 0
    assert checked >= sum(len(exit_eval.attack_columns(EXITS, family)) for family in ATTACKS)
    for attacked, forward, gradient in counted["square"]:
        assert gradient == 0 and forward <= attacked * attacks["adaptive_square"]["forward_passes"]


# --- several strengths, randomised models -------------------------------------------------------------


def test_each_column_is_the_worst_case_over_the_listed_strengths():
    """An example is robust to "exit1" only if robust to FGSM's and PGD's exit1; FGSM has no cosine run."""
    rng = np.random.default_rng(0)
    names = ["fgsm", "pgd5"]
    results = {f"{f}/{c}": rng.random(50) > 0.3 for f in names for c in exit_eval.attack_columns(2, f)}
    results[exit_eval.SQUARE_COLUMN] = rng.random(50) > 0.2
    columns = exit_eval.merge_columns(results, names, 2)
    assert list(columns) == ["exit1", "exit2", "average", "max_average", "adaptive_follow", "adaptive_cosine",
                             "adaptive_to_exit1", "adaptive_square", "adaptive", "fgsm", "pgd5"]
    np.testing.assert_array_equal(columns["exit1"], results["fgsm/exit1"] & results["pgd5/exit1"])
    np.testing.assert_array_equal(columns["adaptive_cosine"], results["pgd5/adaptive_cosine"])
    parts = ["adaptive_follow", "adaptive_cosine", "adaptive_to_exit1", "adaptive_square"]
    np.testing.assert_array_equal(columns["adaptive"], np.logical_and.reduce([columns[c] for c in parts]))
    np.testing.assert_array_equal(
        columns["fgsm"], np.logical_and.reduce([results[f"fgsm/{c}"] for c in exit_eval.attack_columns(2, "fgsm")])
    )


@pytest.mark.slow
def test_a_noisy_multi_exit_model_reproduces_with_a_seed_and_states_its_randomness(digits):
    keras.utils.set_random_seed(1)
    noisy = keras_smart.convert(_multi_exit(width=4, after=("pool2",)), "float", noise_init=0.5)
    keras_smart.set_tradeoff(noisy, 1.0)
    policy = keras_smart.exits.calibrate(noisy, digits["held_out"], budget=0.95)
    x, y = digits["test"]
    run = lambda **kw: evaluation.evaluate_tradeoff(  # noqa: E731
        noisy, (x[:16], y[:16]), policy=policy, tradeoffs=(1.0,), attacks=("fgsm",), eps=EPS,
        attack_options={"square": {"queries": 5}}, progress=False, **kw
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", evaluation.GradientMaskingWarning)  # an untrained model
        first = run(seed=3, eot_samples=2)
        assert run(seed=3, eot_samples=2).rows == first.rows
    assert first.settings["randomness"]["mode"] == "eot" and first.settings["randomness"]["eot_samples"] == 2
    fgsm = first.settings["attacks"]["fgsm"]
    assert (fgsm["steps"], fgsm["random_start"]) == (1, False) and "adaptive_cosine" not in fgsm["columns"]
    assert fgsm["columns"]["exit1"] == {"mode": "single", "exit": 1, "forward_passes": 3, "gradient_passes": 2}


# --- errors -------------------------------------------------------------------------------------------


def test_a_multi_exit_model_without_a_policy_says_how_to_make_one(trained, digits):
    model, _ = trained
    with pytest.raises(ValueError, match=r"policy=keras_smart\.exits\.calibrate\(model, held_out, budget="):
        evaluation.evaluate_tradeoff(model, digits["test"], eps=EPS, progress=False)


def test_a_policy_for_another_model_fails_with_the_policys_own_error(trained, digits):
    model, _ = trained
    other = _multi_exit(width=4, after=("pool1",), name="other")
    other_policy = keras_smart.exits.calibrate(other, digits["held_out"], budget=0.5)
    with pytest.raises(ValueError) as expected:
        other_policy.check_model(model)
    with pytest.raises(ValueError) as raised:
        evaluation.evaluate_tradeoff(model, digits["test"], policy=other_policy, eps=EPS, progress=False)
    assert str(raised.value) == str(expected.value)


def test_a_policy_with_a_single_exit_model_or_a_wrong_type_is_refused(trained, digits):
    model, policy = trained
    single = keras_smart.backbones.digits_cnn(width=4)  # no exits
    with pytest.raises(ValueError, match="has no side exits"):
        evaluation.evaluate_tradeoff(single, digits["test"], policy=policy, eps=EPS, progress=False)
    with pytest.raises(TypeError, match="ExitPolicy"):
        evaluation.evaluate_tradeoff(model, digits["test"], policy=policy.to_json(), eps=EPS, progress=False)


@pytest.mark.parametrize(
    "attacks, fragment",
    [
        (("pgd20", "autoattack"), "no multi-exit form"),
        (("apgd-ce",), "no multi-exit form"),
        (("square",), "at least one gradient attack"),
        (("pgd0",), "Unknown attack"),
    ],
)
def test_attacks_a_multi_exit_model_cannot_take_fail_before_any_work(trained, digits, attacks, fragment):
    model, policy = trained
    with pytest.raises(ValueError, match=fragment):
        evaluation.evaluate_tradeoff(model, digits["test"], policy=policy, attacks=attacks, eps=EPS, progress=False)


def test_default_attacks_depend_on_the_model(trained):
    model, policy = trained
    common = dict(tradeoffs=None, eps=EPS, norm="linf", max_examples=None, batch_size=256, seed=0, eot_samples=None,
                  noise="sample", attack_options=None, input_range=(0.0, 1.0))
    multi = plan_lib.make_plan(model, attacks=None, policy=policy, **common)
    assert multi.names == list(exit_eval.DEFAULT_ATTACKS) == ["fgsm", "pgd20"]
    assert multi.components == ["fgsm", "pgd20", "square"] and multi.exits == EXITS
    single = plan_lib.make_plan(keras_smart.backbones.digits_cnn(width=4), attacks=None, **common)
    assert single.names == ["fgsm", "pgd20", "autoattack"] and single.exits == 1
