"""Per-path densities on the embedded digits, judged by AutoAttack, against same-density dedicated models.

For each (d_clean, d_adv) point this trains, on `keras_smart.backbones.digits_cnn()`
(Keras's default batch-norm momentum), the 4,000 training digits, Adam 1e-3,
batch 64, 10 epochs, PGD-7 at L-inf eps 0.3 (eps warmed up over 3 epochs):

- SMART: switch mode, the two-path recipe (tradeoffs (0, 1), --clean_share of
  each batch clean, half by default), snip masks designed with --allocation
  (global by default; and --min_density) after one dense epoch, batch-norm
  recalibrated at the end of fit (the default);
- "pgd_at_mask": PGD-AT through SMART's own adversarial mask, fixed from the
  start (every example at lam = 1: the loss is CE(x_adv) alone);
- "plain_mask": standard training through SMART's own clean mask.

Every model is judged on the first 500 test digits by the package's full
AutoAttack (APGD-CE, APGD-T, Square) and PGD-20, and its clean accuracy on all
1,000 test digits. Extra runs (--extras) vary one thing at the default point:
the training attack's step schedule, the loss (TRADES), a density floor, the
lam recipe, mask timing, and a plain GradientTape PGD-AT loop through the same
mask (the ablation for the robust path).

Run: python benchmarks/density_grid.py [--grid 0.1:0.5,0.35:0.35] [--extras ...]
Prints one JSON object per run as it finishes, then the whole report. Not a test.
"""

import argparse
import json
import os
import platform
import time

import numpy as np
import tensorflow as tf

import keras_smart
from keras_smart import _compat
from keras_smart import backbones
from keras_smart import callbacks

keras = _compat.keras

EPS = 0.3
EVAL_EXAMPLES = 500
OAT_RECIPE = {"tradeoffs": keras_smart.config.OAT_TRADEOFFS, "clean_share": 1 / 6}
EXTRAS = (
    "cosine_attack",  # train with a cosine step schedule from 2 eps
    "trades",  # TRADES loss (beta 6), with its dedicated PGD-AT-through-mask twin trained with TRADES too
    "min_density",  # every kernel keeps at least 10% of its weights per path
    "dense_logits",  # the classifier layer stays dense
    "layer_allocation",  # every kernel at the path's density (prunes the convolutions too)
    "magnitude", "random", "learned",  # other mask scores (learned: layer allocation, its only one)
    "blend", "noise",  # SMART's other trade-off modes, trained with OAT's recipe as they need lam > 0 values
    "oat_recipe",  # OAT's tradeoffs and 1/6 clean share instead of the two-path recipe
    "adv_heavy",  # a quarter of each batch clean instead of half
    "adv_shared",  # only the adversarial loss trains the weights both masks keep
    "all_adversarial",  # every example on the adversarial path (clean_share 0): the mask timing alone
    "rewind",  # masks designed after the dense epoch, then every weight rewound to its initial value
    "rewind_adv_heavy",  # rewinding with a quarter of each batch clean
    "attack_bn_train",  # the training attack normalises with batch statistics, not the moving ones
    "adv_shared_heavy",  # both of the above
    "masks_at_start",  # masks designed before any training (no dense warm-up)
    "no_recalibration",  # the fit-end batch-norm recalibration switched off
    "loop_pgd_at_mask",  # a plain GradientTape PGD-AT loop through the same adversarial mask
    "dense",  # dense standard and dense PGD-AT models
)


def _compile(model, learning_rate):
    model.compile(
        keras.optimizers.Adam(learning_rate),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    return model


def _attack(schedule="fixed", bn_mode="inference"):
    return keras_smart.AttackConfig(eps=EPS, steps=7, step_schedule=schedule, bn_mode=bn_mode)


def _fit(model, x, y, args, cbs):
    model.fit(x, y, batch_size=args.batch_size, epochs=args.epochs, verbose=0, callbacks=cbs)


def _smart(args, density, x, y, *, schedule="fixed", loss="oat", recipe=None, warmup_epochs=1,
           recalibrate=True, allocation=None, score="snip", mode=None, shared_weights="both",
           bn_mode="inference", **mask_options):
    mode = mode or args.mode
    if recipe is None:  # switch mode trains its two paths; blend and noise need OAT's tradeoffs in between
        recipe = {"tradeoffs": (0.0, 1.0), "clean_share": args.clean_share} if mode == "switch" else OAT_RECIPE
    allocation = allocation or args.allocation
    if args.min_density and score != "learned":
        mask_options = {"min_density": args.min_density, **mask_options}
    keras.utils.set_random_seed(args.seed)
    smart = _compile(keras_smart.convert(backbones.digits_cnn(), "smart", tradeoff_mode=mode), args.learning_rate)
    attack = _attack(schedule, bn_mode)
    cbs = [
        callbacks.AdversarialCallback(attack=attack, eps_schedule=args.warmup, seed=args.seed, loss=loss,
                                      recalibrate=recalibrate, shared_weights=shared_weights, **recipe),
        callbacks.MaskUpdate((x[:512], y[:512]) if score in ("snip", "learned") else None, score=score,
                             density=density, warmup_epochs=warmup_epochs,
                             seed=args.seed, allocation=allocation,
                             **({"attack": attack} if score in ("snip", "learned") else {}), **mask_options),
    ]
    _fit(smart, x, y, args, cbs)
    return smart


def _through_mask(args, masks, path, x, y, *, loss="oat"):
    """A dedicated model through one of SMART's masks, fixed from the start: PGD-AT (path 1) or standard (0)."""
    keras.utils.set_random_seed(args.seed)
    model = _compile(keras_smart.convert(backbones.digits_cnn(), "smart"), args.learning_rate)
    name = "adv" if path else "clean"
    keras_smart.set_masks(model, {
        layer: {k.replace(f"_{name}_mask", suffix): v for k, v in m.items() if k.endswith(f"_{name}_mask")
                for suffix in ("_clean_mask", "_adv_mask")}
        for layer, m in masks.items()
    })
    if path:
        attack = _attack()
        _fit(model, x, y, args, [callbacks.AdversarialCallback(
            attack=attack, eps_schedule=args.warmup, tradeoffs=(0.0, 1.0), clean_share=0.0, seed=args.seed, loss=loss)])
    else:
        _fit(model, x, y, args, [])
        keras_smart.recalibrate_batchnorm(model, (x, y), tradeoffs=(0.0,))
    keras_smart.set_tradeoff(model, float(path))
    return model


class MaskedPGDAT(keras.Model):
    """A plain model trained by a GradientTape PGD-AT loop, its kernels re-masked after every step."""

    def __init__(self, inputs, outputs, masks, **kwargs):
        super().__init__(inputs=inputs, outputs=outputs, **kwargs)
        self.eps = tf.Variable(EPS, trainable=False)
        self._masked = [(self.get_layer(name).kernel, tf.constant(mask)) for name, mask in masks.items()]

    def train_step(self, data):
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        x_adv = keras_smart.attacks.run(_attack(), lambda t: self(t, training=False), x, y, eps=self.eps)
        with tf.GradientTape() as tape:
            logits = self(x_adv, training=True)
            loss = tf.reduce_mean(tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), logits))
        weights = self.trainable_weights
        self.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))
        for kernel, mask in self._masked:
            kernel.assign(kernel * mask)
        return {"loss": loss}


def _loop_through_mask(args, masks, x, y):
    keras.utils.set_random_seed(args.seed)
    base = backbones.digits_cnn()
    adv = {layer: m["kernel_adv_mask"] for layer, m in masks.items()}
    model = MaskedPGDAT(base.inputs, base.outputs, adv, name="masked_pgd_at")
    model.compile(keras.optimizers.Adam(args.learning_rate))
    for kernel, mask in model._masked:  # pylint: disable=protected-access
        kernel.assign(kernel * mask)
    warm_up = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: model.eps.assign(EPS * min(1.0, (epoch + 1) / args.warmup)))
    _fit(model, x, y, args, [warm_up])
    return keras.Model(model.inputs, model.outputs)


def _dense(args, x, y, adversarial):
    keras.utils.set_random_seed(args.seed)
    model = _compile(keras_smart.convert(backbones.digits_cnn(), "smart"), args.learning_rate)
    cbs = []
    if adversarial:
        cbs = [callbacks.AdversarialCallback(attack=_attack(), eps_schedule=args.warmup, tradeoffs=(0.0, 1.0),
                                             clean_share=0.0, seed=args.seed)]
    _fit(model, x, y, args, cbs)
    if not adversarial:
        keras_smart.recalibrate_batchnorm(model, (x, y), tradeoffs=(0.0,))
    keras_smart.set_tradeoff(model, 1.0 if adversarial else 0.0)
    return model


def _judge(model, x_test, y_test, tradeoffs):
    """{lam: {clean (1,000), clean_500, pgd20, autoattack, worst_case, macs, nonzero}} at each lam."""
    smart = isinstance(model, keras_smart.SmartModel)
    report = keras_smart.evaluate_tradeoff(
        model, (x_test, y_test), tradeoffs=list(tradeoffs) if smart else None, attacks=("pgd20", "autoattack"),
        eps=EPS, max_examples=EVAL_EXAMPLES, progress=False,
    )
    out = {}
    for row in report.rows:
        lam = row["tradeoff"]
        if smart:
            keras_smart.set_tradeoff(model, lam)
        clean = float(np.mean(np.argmax(model.predict(x_test, verbose=0), -1) == y_test))
        out[str(lam)] = {
            "clean": clean, "clean_500": row["clean"], "pgd20": row["pgd20"], "autoattack": row["autoattack"],
            "worst_case": row["worst_case"], "nonzero": row["nonzero"], "macs": row["macs"],
        }
    return out, list(report.warnings)


def _record(results, name, model, seconds, x_test, y_test, tradeoffs=(0.0, 1.0), **extra):
    judged, warnings = _judge(model, x_test, y_test, tradeoffs)
    entry = {"train_seconds": round(seconds, 1), "rows": judged, "warnings": warnings, **extra}
    if isinstance(model, keras_smart.SmartModel):
        counts = keras_smart.count_nonzero(model)
        entry["nonzero"] = {"total": counts.total, "clean": counts.clean, "adv": counts.adv, "union": counts.union}
        entry["macs"] = {"dense": counts.macs_dense, "clean": counts.macs_clean, "adv": counts.macs_adv}
    results[name] = entry
    print(json.dumps({name: entry}), flush=True)


def _timed(fn, *a, **k):
    t0 = time.perf_counter()
    model = fn(*a, **k)
    return model, time.perf_counter() - t0


def main(args):
    x, y = keras_smart.data.digits("train")
    x_test, y_test = keras_smart.data.digits("test")
    results = {}
    default_masks = None
    for d_clean, d_adv in args.grid if not args.extras_only else ():
        tag = f"{d_clean:g}_{d_adv:g}"
        smart, seconds = _timed(_smart, args, (d_clean, d_adv), x, y)
        _record(results, f"smart_{tag}", smart, seconds, x_test, y_test, density=[d_clean, d_adv])
        masks = keras_smart.get_masks(smart)
        if not args.no_baselines:
            model, seconds = _timed(_through_mask, args, masks, 1, x, y)
            _record(results, f"pgd_at_mask_{tag}", model, seconds, x_test, y_test, tradeoffs=(1.0,))
            model, seconds = _timed(_through_mask, args, masks, 0, x, y)
            _record(results, f"plain_mask_{tag}", model, seconds, x_test, y_test, tradeoffs=(0.0,))
        if (d_clean, d_adv) == args.grid[0]:
            default_masks = masks
    density = args.grid[0]
    tag = f"{density[0]:g}_{density[1]:g}"
    variants = {
        "cosine_attack": dict(schedule="cosine"),
        "trades": dict(loss="trades"),
        "min_density": dict(min_density=0.1),
        "dense_logits": dict(dense_layers=["logits"]),
        "layer_allocation": dict(allocation="layer"),
        "magnitude": dict(score="magnitude"),
        "random": dict(score="random"),
        "learned": dict(score="learned", allocation="layer"),
        "blend": dict(mode="blend", recipe=OAT_RECIPE),
        "noise": dict(mode="noise", recipe=OAT_RECIPE),
        "oat_recipe": dict(recipe=OAT_RECIPE),
        "adv_heavy": dict(recipe={"tradeoffs": (0.0, 1.0), "clean_share": 0.25}),
        "adv_shared": dict(shared_weights="adversarial"),
        "all_adversarial": dict(recipe={"tradeoffs": (0.0, 1.0), "clean_share": 0.0}),
        "rewind": dict(rewind=True),
        "rewind_adv_heavy": dict(rewind=True, recipe={"tradeoffs": (0.0, 1.0), "clean_share": 0.25}),
        "attack_bn_train": dict(bn_mode="train"),
        "adv_shared_heavy": dict(shared_weights="adversarial", recipe={"tradeoffs": (0.0, 1.0), "clean_share": 0.25}),
        "masks_at_start": dict(warmup_epochs=0),
        "no_recalibration": dict(recalibrate=False),
    }
    for extra in args.extras:
        if extra in variants:
            model, seconds = _timed(_smart, args, density, x, y, **variants[extra])
            _record(results, f"smart_{tag}_{extra}", model, seconds, x_test, y_test, density=list(density))
            if extra == "trades":
                model, seconds = _timed(_through_mask, args, keras_smart.get_masks(model), 1, x, y, loss="trades")
                _record(results, f"pgd_at_mask_{tag}_trades", model, seconds, x_test, y_test, tradeoffs=(1.0,))
        elif extra == "loop_pgd_at_mask":
            if default_masks is None:
                raise SystemExit("loop_pgd_at_mask needs the default point's SMART model: drop --extras_only")
            model, seconds = _timed(_loop_through_mask, args, default_masks, x, y)
            _record(results, f"loop_pgd_at_mask_{tag}", model, seconds, x_test, y_test)
        elif extra == "dense":
            for adversarial in (False, True):
                model, seconds = _timed(_dense, args, x, y, adversarial)
                name = "dense_pgd_at" if adversarial else "dense_standard"
                _record(results, name, model, seconds, x_test, y_test, tradeoffs=(1.0 if adversarial else 0.0,))
    report = {
        "settings": {
            "data": "keras_smart.data.digits: 4,000 train / 1,000 test real MNIST digits",
            "backbone": "keras_smart.backbones.digits_cnn() (batch-norm momentum 0.99, Keras's default)",
            "epochs": args.epochs, "batch_size": args.batch_size, "optimizer": f"Adam({args.learning_rate})",
            "train_attack": f"PGD-7 L-inf eps {EPS} random start, eps warm-up {args.warmup} epochs",
            "smart_recipe": f"{args.mode} mode, "
                            + ("tradeoffs (0, 1), clean share " + str(args.clean_share) if args.mode == "switch"
                               else "OAT's tradeoffs and 1/6 clean share")
                            + f", snip {args.allocation} masks after 1 dense epoch"
                            + (f", min_density {args.min_density}" if args.min_density else ""),
            "judge": f"full AutoAttack (APGD-CE, APGD-T, Square) and PGD-20 on the first {EVAL_EXAMPLES} test "
                     "digits; clean accuracy on all 1,000",
            "seed": args.seed,
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}, {_compat.FLAVOUR}",
        },
        "runs": results,
    }
    print(json.dumps(report, indent=1))


def _pair(text):
    clean, adv = (float(v) for v in text.split(":"))
    return clean, adv


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grid", default="0.1:0.5", help="comma-separated d_clean:d_adv; the first is the default point")
    parser.add_argument("--extras", default="", help="comma-separated, from: " + ",".join(EXTRAS))
    parser.add_argument("--no_baselines", action="store_true", help="skip the same-mask dedicated models")
    parser.add_argument("--extras_only", action="store_true", help="train only the --extras (at the first point)")
    parser.add_argument("--clean_share", type=float, default=0.5, help="lam = 0 share of each batch (tradeoffs 0, 1)")
    parser.add_argument("--min_density", type=float, default=0.0, help="design_masks' per-kernel floor (0: none)")
    parser.add_argument("--allocation", default="global", choices=["global", "layer"], help="design_masks' allocation")
    parser.add_argument("--mode", default="switch", choices=["switch", "blend", "noise"],
                        help="SMART's trade-off mode (blend and noise train with OAT's tradeoffs)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3, help="eps warm-up epochs")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--learning_rate", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parsed = parser.parse_args()
    parsed.grid = [_pair(p) for p in parsed.grid.split(",") if p]
    parsed.extras = [e for e in parsed.extras.split(",") if e]
    unknown = sorted(set(parsed.extras) - set(EXTRAS))
    if unknown:
        parser.error(f"unknown extras {unknown}; choose from {list(EXTRAS)}")
    main(parsed)
