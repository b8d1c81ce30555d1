"""The attack suite: attack names, their options (AutoAttack's standard settings), and what each costs.

An attack's cost is counted in forward and gradient passes per attacked
example, at most (a batch stops early once every example in it is broken):
every pass through the model counts, the final prediction on the attack's
output included.
"""

import re

from keras_smart import config as config_lib
from keras_smart import validation
from keras_smart.evaluation import art

ATTACK_NAMES = ("fgsm", "pgd<K>", "apgd-ce", "apgd-dlr", "square", "autoattack")
DEFAULT_ATTACKS = ("fgsm", "pgd20", "autoattack")  # `evaluate_tradeoff(attacks=None)` for a one-output model
AUTOATTACK = ("apgd-ce", "apgd-dlr", "square")
GRADIENT_ATTACKS = ("fgsm", "pgd", "apgd-ce", "apgd-dlr")

# AutoAttack's "standard" settings (Croce & Hein 2020), and one PGD run.
DEFAULT_ATTACK_OPTIONS = {
    "pgd": {"restarts": 1},
    "apgd-ce": {"steps": 100, "restarts": 1},
    "apgd-dlr": {"steps": 100, "restarts": 1, "target_classes": 9},
    "square": {"queries": 5000, "p_init": 0.8, "restarts": 1},
}

# Forward passes each gradient averages over for a randomised model when eot_samples=None.
DEFAULT_EOT_SAMPLES = 4

_FIXED_NAMES = ("fgsm", "apgd-ce", "apgd-dlr", "square", "autoattack")


def parse_attacks(names):
    """The attack names, lower-cased and checked, in the order given.

    Example:
      >>> parse_attacks(("FGSM", "pgd20", "autoattack"))
      ['fgsm', 'pgd20', 'autoattack']
    """
    if isinstance(names, str) or not hasattr(names, "__iter__"):
        raise TypeError(
            f"`attacks` must be a sequence of attack names, e.g. ('fgsm', 'pgd20', 'autoattack'). Received: {names!r}"
        )
    parsed = []
    for name in names:
        key = _parse_attack(name)
        if key in parsed:
            raise ValueError(f"Attack {key!r} is listed twice in `attacks`: {list(names)}")
        parsed.append(key)
    if not parsed:
        raise ValueError("`attacks` must name at least one attack, e.g. ('fgsm', 'pgd20', 'autoattack').")
    return parsed


def _parse_attack(name):
    if not isinstance(name, str):
        raise TypeError(f"Attack names must be strings. Received: {name!r} of type {type(name).__name__}")
    key = name.strip().lower()
    if not (key in _FIXED_NAMES or re.fullmatch(r"pgd[1-9][0-9]*", key)):
        raise ValueError(
            f"Unknown attack {name!r}. Valid names: {', '.join(repr(n) for n in ATTACK_NAMES)}: 'pgd<K>' is "
            "K-step PGD (e.g. 'pgd20'), 'apgd-dlr' is targeted, 'autoattack' is APGD-CE + targeted APGD-DLR + "
            "Square, worst case per example."
        )
    return key


def components(names):
    """The attacks that actually run: pgd<K> stays itself, autoattack adds its three parts.

    Example:
      >>> components(["pgd20", "square", "autoattack"])
      ['pgd20', 'square', 'apgd-ce', 'apgd-dlr']
    """
    needed = [n for n in names if n != "autoattack"]
    if "autoattack" in names:
        needed += [c for c in AUTOATTACK if c not in needed]
    return needed


def kind(name):
    """The attack family of a name: "pgd" for any "pgd<K>", else the name."""
    return "pgd" if name.startswith("pgd") else name


def parse_options(options):
    """`DEFAULT_ATTACK_OPTIONS` with the user's overrides, each checked.

    Example:
      >>> parse_options({"square": {"queries": 100}})["square"]
      {'queries': 100, 'p_init': 0.8, 'restarts': 1}
    """
    merged = {k: dict(v) for k, v in DEFAULT_ATTACK_OPTIONS.items()}
    if options is None:
        return merged
    if not isinstance(options, dict):
        raise TypeError(
            "`attack_options` must be a dict {attack: {option: value}}, e.g. {'apgd-ce': {'steps': 50}}. "
            f"Received: {type(options).__name__}"
        )
    for attack, values in options.items():
        if attack not in merged:
            raise ValueError(f"`attack_options` has settings for {sorted(merged)}. Received settings for {attack!r}")
        if not isinstance(values, dict):
            raise TypeError(f"`attack_options[{attack!r}]` must be a dict. Received: {values!r}")
        unknown = sorted(set(values) - set(merged[attack]))
        if unknown:
            raise ValueError(f"Unknown option(s) {unknown} for {attack!r}. Accepted: {sorted(merged[attack])}")
        for key, value in values.items():
            name = f"attack_options[{attack!r}][{key!r}]"
            if key == "p_init":
                merged[attack][key] = validation.check_real(value, name, low=0.0, high=1.0, low_open=True)
            else:
                merged[attack][key] = validation.check_int(value, name, minimum=1)
    return merged


# --- settings and costs ------------------------------------------------------------------------------


def attack_settings(name, eps, norm, options, eot, classes):
    """The settings and the cost (forward and gradient passes per attacked example, at most) of one attack.

    Example:
      >>> pgd = attack_settings("pgd20", 0.1, config_lib.Norm.LINF, DEFAULT_ATTACK_OPTIONS, 1, 10)
      >>> pgd["attack"], pgd["steps"], pgd["gradient_passes"]
      ('PGD-20', 20, 20)
    """
    common = {"eps": eps, "norm": norm.value, "eot_samples": eot}
    if name == "fgsm":
        return {**common, **_fgsm(eps, eot)}
    if name.startswith("pgd"):
        return {**common, **_pgd(int(name[3:]), eps, options["pgd"]["restarts"], eot)}
    if name in ("apgd-ce", "apgd-dlr"):
        return {**common, **_apgd(name, options[name], eot, classes)}
    if name == "square":
        return {**common, **_square(norm, options["square"], eot)}
    parts = {c: attack_settings(c, eps, norm, options, eot, classes) for c in AUTOATTACK}
    return {
        **common,
        "attack": "AutoAttack (standard: APGD-CE, APGD-T, Square)",
        "components": list(AUTOATTACK),
        "parts": parts,
        "note": "each part attacks only the examples the earlier parts left robust; per example worst case",
        "forward_passes": sum(p["forward_passes"] for p in parts.values()),
        "gradient_passes": sum(p["gradient_passes"] for p in parts.values()),
    }


def _fgsm(eps, eot):
    # One (EOT-averaged) gradient, then the prediction on x_adv.
    return {"attack": "FGSM", "implementation": "keras_smart.attacks.fgsm (in-graph)", "steps": 1, "step_size": eps,
            "random_start": False, "restarts": 1, "forward_passes": eot + 1, "gradient_passes": eot}


def _pgd(steps, eps, restarts, eot):
    # Per restart: `steps` (EOT-averaged) gradients, then the prediction on x_adv.
    return {"attack": f"PGD-{steps}", "implementation": "keras_smart.attacks.pgd (in-graph)", "steps": steps,
            "step_size": 2.5 * eps / steps, "random_start": True, "restarts": restarts,
            "forward_passes": restarts * (steps * eot + 1), "gradient_passes": restarts * steps * eot}


def _apgd(name, options, eot, classes):
    # Per restart and target: the start and `steps` gradients, then the prediction; APGD-T ranks the
    # targets with one more prediction.
    targets = 1 if name == "apgd-ce" else min(options["target_classes"], classes - 1)
    per_run = (options["steps"] + 1) * eot
    settings = {"attack": "APGD-CE" if name == "apgd-ce" else "APGD-T (targeted DLR)",
                "implementation": "keras_smart.attacks.apgd (in-graph, Croce & Hein 2020)",
                "loss": "cross-entropy" if name == "apgd-ce" else "targeted DLR",
                "steps": options["steps"], "step_size": "2*eps, halved per example at the checkpoints",
                "momentum": 0.75, "rho": 0.75, "random_start": True, "restarts": options["restarts"]}
    if name == "apgd-dlr":
        settings["target_classes"] = targets
    settings["forward_passes"] = options["restarts"] * targets * (per_run + 1) + (name == "apgd-dlr")
    settings["gradient_passes"] = options["restarts"] * targets * per_run
    return settings


def _square(norm, options, eot):
    settings = {"attack": "Square (margin loss, untargeted)", "queries": options["queries"],
                "p_init": options["p_init"], "restarts": options["restarts"], "gradient_passes": 0}
    if norm == config_lib.Norm.LINF:
        # Per restart: the start and queries - 1 candidates (each EOT-averaged), then the prediction.
        settings["implementation"] = "keras_smart.attacks.square (in-graph; per-example windows as the reference)"
        settings["forward_passes"] = options["restarts"] * (options["queries"] * eot + 1)
    else:
        # ART: per restart one prediction and two losses, then per query one prediction and two losses.
        settings["implementation"] = f"IBM ART SquareAttack ({art.version()})"
        settings["forward_passes"] = options["restarts"] * (options["queries"] + 1) * (1 + 2 * eot) + 1
    return settings
