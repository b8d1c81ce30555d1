"""model_fingerprint: a short hash of the weights that make a model's function (what a report measured)."""

import hashlib

import numpy as np

from keras_smart import _compat
from keras_smart import training

keras = _compat.keras

# Counters that TF-MOT's wrappers keep among the weights: training state, not part of the function.
_FINGERPRINT_SKIPS = ("pruning_step", "optimizer_step")


def model_fingerprint(model):
    """A short hash (16 hex digits of a SHA-256) of the weights that make `model`'s function.

    Every weight in `model.weights` counts, in order, with its layer's name, its
    own name, shape and dtype: kernels, biases, masks, batch-norm statistics
    (both paths), noise scales, FiLM weights. Left out: the trade-off variable
    of any SmartModel in it (`evaluate_tradeoff` and `set_tradeoff` move it;
    the fingerprint does not depend on lam) and TF-MOT's step counters
    ("pruning_step", "optimizer_step"). Optimizer and metric state are not in
    `model.weights` in either Keras flavour. The same weights give the same
    fingerprint after a `.keras` save and load; pruning, fine-tuning, new masks
    or recalibrated batch-norm give another. Fingerprints are not comparable
    across Keras flavours (their weight orders differ).

    `evaluate_tradeoff` stores it in `report.settings["model_fingerprint"]`;
    `keras_smart.export.bundle` compares it with the model it exports.

    Args:
      model: a Keras model (SmartModel or plain).

    Returns:
      A string of 16 lowercase hex digits.

    Example:
      >>> fingerprint = keras_smart.evaluation.model_fingerprint(smart)
      >>> len(fingerprint), fingerprint == keras_smart.evaluation.model_fingerprint(smart)
      (16, True)
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model_fingerprint` expects a keras.Model. Received: {type(model).__name__}")
    layers = _compat.flatten_layers(model)
    skipped = {id(m.tradeoff_variable) for m in (model, *layers) if isinstance(m, training.SmartModel)}
    owners = {}
    for layer in layers:  # outer before inner: the innermost layer names a weight
        for weight in layer.weights:
            owners[id(weight)] = layer.name
    digest = hashlib.sha256(b"keras_smart.model_fingerprint v1\n")
    for weight in model.weights:
        name = _compat.weight_name(weight)
        if id(weight) in skipped or name in _FINGERPRINT_SKIPS:
            continue
        value = np.ascontiguousarray(np.asarray(weight.numpy()))
        header = f"{owners.get(id(weight), '')}/{name}|{list(value.shape)}|{value.dtype.str}\n"
        digest.update(header.encode("utf-8"))
        digest.update(value.tobytes())
    return digest.hexdigest()[:16]
