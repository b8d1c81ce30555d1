"""Adversarial training under MirroredStrategy on two logical CPU devices (run in its own process).

Prints one JSON line; tests/test_training.py runs it, since devices must be set
before TensorFlow initialises them. `mirrored_training.py METHOD multi_exit`
trains a two-exit model (tests/test_multi_exit_training.py) on one label array.
"""

import json
import sys

import numpy as np
import tensorflow as tf


def main():
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras_smart  # pylint: disable=g-import-not-at-top
    from keras_smart import _compat  # pylint: disable=g-import-not-at-top

    keras = _compat.keras
    strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    method = sys.argv[1] if len(sys.argv) > 1 else "smart"
    multi_exit = sys.argv[2:] == ["multi_exit"]
    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(4, 3, padding="same")(inputs)
        h = keras.layers.ReLU()(keras.layers.BatchNormalization()(h))
        outputs = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(h))
        if multi_exit:
            outputs = [keras.layers.Dense(3, name="exit_1")(keras.layers.GlobalAveragePooling2D()(h)), outputs]
        smart = keras_smart.convert(keras.Model(inputs, outputs), method)
        smart.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    callback = keras_smart.callbacks.AdversarialCallback(attack=keras_smart.AttackConfig(eps=0.1, steps=2))
    history = smart.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[callback])
    bn = [l for l in smart.layers if isinstance(l, keras_smart.layers.DualBatchNormalization)][0]
    print(json.dumps({
        "replicas": strategy.num_replicas_in_sync,
        "loss": [float(v) for v in history.history["loss"]],
        "logs": sorted(history.history),
        "adv_accuracy": float(history.history["adv_accuracy"][-1]),
        "clean_stats_moved": bool(np.any(bn.moving_mean.numpy() != 0)),
        "adv_stats_moved": bool(np.any(bn.adv_moving_mean.numpy() != 0)),
    }))


if __name__ == "__main__":
    main()
