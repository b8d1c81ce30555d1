"""Pruning-preserving quantization-aware training (TF-MOT, tf_keras only) of one trade-off of a pruned model."""

from keras_smart import _compat
from keras_smart import training
from keras_smart import validation
from keras_smart.conversion import strip
from keras_smart.pruning import kernels as kernels_lib
from keras_smart.pruning import native
from keras_smart.pruning import tfmot

keras = _compat.keras


def quantize_aware(model, *, tradeoff=None, preserve_sparsity=True):
    """TF-MOT quantization-aware training for one trade-off of a (pruned) model (tf_keras flavour).

    TF-MOT's quantizers fake-quantize a layer's stored kernel, and its registry
    knows only Keras' own layer classes; a conditional layer multiplies masks
    and noise into its kernel after that point, so the quantized tensor would
    not be the one the convolution uses, and `strip` could not fold the
    wrapped layers. QAT is therefore applied where TF-MOT supports it: to the
    plain model that `keras_smart.strip(model, tradeoff)` folds at one
    trade-off. With `preserve_sparsity` it uses TF-MOT's
    `Default8BitPrunePreserveQuantizeScheme`, so the pruned (and masked-out)
    weights stay zero while fine-tuning. Export the result with
    `keras_smart.export.to_tflite(qat_model, path, quantize="int8")` (no
    representative data needed: the ranges are learned).

    Args:
      model: a SmartModel (folded at `tradeoff` first) or a plain tf_keras model.
      tradeoff: the lam to fold a SmartModel at (None: its current trade-off);
        must be None for a plain model.
      preserve_sparsity: keep zero weights at zero during QAT (default True).

    Returns:
      A plain quantization-aware tf_keras model (TF-MOT `QuantizeWrapperV2` layers),
      to compile and fine-tune with `fit`.

    Raises:
      RuntimeError: the process runs Keras 3 (TF-MOT needs TF_USE_LEGACY_KERAS=1).
      ImportError: TF-MOT is not installed.
      ValueError: a trade-off for a plain model, or a model still wrapped for pruning.

    Example:
      >>> model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(8, 3, activation="relu"),
      ...                           keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
      >>> pruned = keras_smart.pruning.prune(keras_smart.convert(model, "smart"), 0.5)
      >>> if keras_smart.KERAS_FLAVOUR == "tf_keras":  # TF-MOT accepts tf_keras models only
      ...     qat = keras_smart.pruning.quantize_aware(pruned, tradeoff=1.0)  # then compile and fit
    """
    tfmot_module = tfmot.import_tfmot("quantize_aware")
    if not isinstance(model, keras.Model):
        raise TypeError(f"`quantize_aware` expects a Keras model. Received: {type(model).__name__}")
    if kernels_lib.tfmot_wrappers(model):
        raise ValueError(
            f"Model '{model.name}' is still wrapped for TF-MOT pruning: call strip_pruning(model) first."
        )
    if isinstance(model, training.SmartModel):
        tradeoff = None if tradeoff is None else validation.check_tradeoff(tradeoff, "tradeoff")
        model = strip(model, tradeoff=tradeoff)
    elif tradeoff is not None:
        raise ValueError(
            f"Model '{model.name}' is a plain Keras model: it has no trade-off. "
            f"Received: tradeoff={tradeoff!r}"
        )
    native.strip_pruning(model)  # natively pruned: its kernels' own constraints back, before TF-MOT clones it
    quantization = tfmot_module.quantization.keras
    scheme = (
        tfmot_module.experimental.combine.Default8BitPrunePreserveQuantizeScheme()
        if preserve_sparsity
        else quantization.default_8bit.Default8BitQuantizeScheme()
    )
    return quantization.quantize_apply(quantization.quantize_annotate_model(model), scheme)


__all__ = ["quantize_aware"]
