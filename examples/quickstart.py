"""The keras_smart API tour: convert a keras.applications MobileNetV2, design masks, move the knob.

Run: python examples/quickstart.py [--image_size 64] [--density 0.5,0.3]
Untrained weights (weights=None): this shows the mechanics, not accuracy. Adversarial
training of the converted model comes with `model.fit` and the adversarial callback.
"""

import argparse
import time

import numpy as np

import keras_smart

keras = keras_smart.keras


def calibrate_batch_norm(model, x):
    """Sets every batch-norm's moving statistics to those of batch `x`.

    A stand-in for training: with weights=None and default statistics, a deep
    network's activations vanish and its outputs cannot show anything.
    """
    norms = [l for l in model.layers if isinstance(l, keras.layers.BatchNormalization)]
    momenta = [l.momentum for l in norms]
    for layer in norms:
        layer.momentum = 0.0
    model(x, training=True)
    for layer, momentum in zip(norms, momenta):
        layer.momentum = momentum


def main(image_size=64, density=(0.5, 0.3), seed=0):
    keras.utils.set_random_seed(seed)
    t0 = time.perf_counter()
    base = keras.applications.MobileNetV2(
        weights=None, input_shape=(image_size, image_size, 3), classes=10
    )
    x = np.random.default_rng(seed).random((16, image_size, image_size, 3)).astype("float32")
    calibrate_batch_norm(base, x)

    # 1. convert: a clone whose conv/dense layers carry a clean and an adversarial mask.
    smart = keras_smart.convert(base, method="smart")
    same = float(np.max(np.abs(smart(x).numpy() - base(x).numpy())))
    print(f"Keras flavour: {keras_smart.KERAS_FLAVOUR}; converted {len(smart.conditional_layers())} "
          f"layers of {base.name} in {time.perf_counter() - t0:.1f}s")
    print(f"max |converted - original| at trade-off 0, all-ones masks: {same:.1e}")

    # 2. design masks: each path keeps its own share of every kernel.
    keras_smart.design_masks(smart, score="random", density=density, seed=seed)
    counts = keras_smart.count_nonzero(smart)
    print("\nnon-zero kernel weights and MACs per example")
    print(f"{'':>8} {'weights':>12} {'share':>7} {'MACs':>14}")
    for path, weights, macs in (
        ("dense", counts.total, counts.macs_dense),
        ("clean", counts.clean, counts.macs_clean),
        ("adv", counts.adv, counts.macs_adv),
        ("union", counts.union, None),
    ):
        macs_text = f"{macs:>14,}" if macs is not None else f"{'(storage)':>14}"
        print(f"{path:>8} {weights:>12,} {weights / counts.total:>7.1%} {macs_text}")

    # 3. the knob: one shared variable, no retrace, no rebuild.
    print("\nhow outputs move with the trade-off (probabilities vs the original dense model)")
    print(f"{'lam':>6} {'max |dp|':>10} {'top-1 agreement':>16}")
    reference = base(x).numpy()
    for lam in (0.0, 0.25, 0.5, 1.0):
        keras_smart.set_tradeoff(smart, lam)
        probs = smart(x).numpy()
        agree = float(np.mean(probs.argmax(-1) == reference.argmax(-1)))
        print(f"{lam:>6.2f} {np.abs(probs - reference).max():>10.4f} {agree:>16.0%}")
    print("(switch mode: every lam > 0 runs the adversarial path; untrained masks, so agreement is low)")

    # 4. strip: a plain Keras model for one trade-off, masks folded into the kernels.
    plain = keras_smart.strip(smart, tradeoff=1.0)
    gap = float(np.max(np.abs(plain(x).numpy() - smart(x).numpy())))
    print(f"\nstrip(tradeoff=1.0): plain {type(plain).__name__} with the original layer names; "
          f"max |stripped - smart| = {gap:.1e}")
    print(f"done in {time.perf_counter() - t0:.1f}s")
    return {"conversion_gap": same, "strip_gap": gap, "counts": counts}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_size", type=int, default=64)
    parser.add_argument("--density", default="0.5,0.3", help="d_clean,d_adv")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.image_size, tuple(float(d) for d in args.density.split(",")), args.seed)
