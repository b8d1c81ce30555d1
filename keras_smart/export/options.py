"""The settings of one `to_tflite` call, each checked before any work is done."""

import dataclasses

from keras_smart import _compat
from keras_smart import compaction
from keras_smart import inputs
from keras_smart import training
from keras_smart import validation
from keras_smart.conversion import get_tradeoff

keras = _compat.keras

QUANTIZE_CHOICES = (None, "dynamic", "float16", "int8")
AUTO = "auto"  # compact: compact a baked trade-off whose masks drop whole channels, else keep the dense layout
# TF-MOT wrappers, by name (so TF-MOT is not imported): pruning ones must be stripped before export;
# quantization-aware-training ones export as int8 with the ranges they learned.
_TFMOT_PRUNE_WRAPPERS = ("PruneLowMagnitude",)
_TFMOT_QUANTIZE_WRAPPERS = ("QuantizeWrapper", "QuantizeWrapperV2")


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """The checked settings of one export.

    Attributes:
      smart: whether the model is a SmartModel (it has a trade-off).
      quantization_aware: whether the model holds TF-MOT quantize wrappers (it
        exports as int8 with the ranges it learned).
      tradeoff: the trade-off to bake, or None (runtime trade-off, plain model).
      runtime_tradeoff: whether the trade-off is the file's second input.
      quantize: None, "dynamic", "float16" or "int8".
      check_tradeoffs: the trade-offs a runtime-trade-off file is checked and
        calibrated at; () for any other file.
      atol: the largest max abs difference a float file may show.
      min_agreement: the smallest top-1 agreement a quantized file may show.
      int8_io: whether an int8 file takes and gives int8 tensors.
      max_samples: at most this many inputs are used for calibration and checks.
      compact: whether the baked model is compacted (`strip(..., compact=True)`).
    """

    smart: bool
    quantization_aware: bool
    tradeoff: object
    runtime_tradeoff: bool
    quantize: object
    check_tradeoffs: tuple
    atol: float
    min_agreement: float
    int8_io: bool
    max_samples: int
    compact: bool = False


def check_options(
    model,
    *,
    tradeoff,
    runtime_tradeoff,
    quantize,
    representative_data,
    check_tradeoffs,
    atol,
    min_agreement,
    int8_io,
    max_samples,
    compact=AUTO,
):
    """Checks every `to_tflite` setting against `model`; returns them as `ExportOptions`."""
    quantization_aware = _check_model(model, quantize)
    smart = isinstance(model, training.SmartModel)
    runtime_tradeoff = validation.check_bool(runtime_tradeoff, "runtime_tradeoff")
    tradeoff = _baked_tradeoff(model, smart, tradeoff, runtime_tradeoff)
    compact = _check_compact(model, smart, compact, runtime_tradeoff, tradeoff)
    _check_grouped_conv3d(model, smart, runtime_tradeoff)
    int8_io = validation.check_bool(int8_io, "int8_io")
    _check_quantize(quantize, representative_data is not None or quantization_aware, int8_io)
    check_tradeoffs = validation.check_tradeoffs(check_tradeoffs, "check_tradeoffs")
    return ExportOptions(
        smart=smart,
        quantization_aware=quantization_aware,
        tradeoff=tradeoff,
        runtime_tradeoff=runtime_tradeoff,
        quantize=quantize,
        check_tradeoffs=check_tradeoffs if runtime_tradeoff else (),
        atol=validation.check_positive(atol, "atol"),
        min_agreement=validation.check_real(min_agreement, "min_agreement", low=0.0, high=1.0),
        int8_io=int8_io,
        max_samples=validation.check_int(max_samples, "max_samples", minimum=1),
        compact=compact,
    )


def _check_compact(model, smart, compact, runtime_tradeoff, tradeoff):
    """Whether the baked model is compacted: `compact`, checked (True needs a baked trade-off of a SmartModel whose
    masks keep whole channels), or for "auto", whether the masks used at that trade-off drop whole channels."""
    if _check_compact_setting(compact) == AUTO:
        if runtime_tradeoff or not smart:
            return False
        try:
            return compaction.check_channel_structured(model, tradeoff) > 0
        except ValueError:  # unstructured masks, or none: export the dense layout
            return False
    if not compact:
        return False
    if runtime_tradeoff:
        raise ValueError(
            "compact=True needs a baked trade-off: a runtime-trade-off file keeps both paths' kernels, so no "
            "channel is dropped on both. Pass `tradeoff` (or bundle `tradeoffs`) with runtime_tradeoff=False, or "
            "leave compact unset. Received: compact=True, runtime_tradeoff=True"
        )
    if not smart:
        raise ValueError(
            f"compact=True compacts the trade-off baked from a SmartModel's masks; model '{model.name}' is a plain "
            f"Keras model ({type(model).__name__}). Export keras_smart.compaction.compact(model) instead, or the "
            "SmartModel itself."
        )
    compaction.check_channel_structured(model, tradeoff)
    return True


def _check_compact_setting(compact):
    if isinstance(compact, str) and compact == AUTO or isinstance(compact, bool):
        return compact
    raise ValueError(f'`compact` must be True, False or "auto". Received: compact={compact!r}')


def check_staged_options(
    model,
    *,
    runtime_tradeoff,
    quantize,
    representative_data,
    atol,
    min_agreement,
    int8_io,
    max_samples,
    compact=AUTO,
):
    """Checks the settings of a staged (multi-exit) bundle; returns the `ExportOptions` of its stage files.

    Each stage file is a plain model (the trade-off is baked); it takes and
    gives float32 tensors, so that one stage's features feed the next as they are.
    """
    if validation.check_bool(runtime_tradeoff, "runtime_tradeoff"):
        raise ValueError(
            f"Model '{model.name}' has exits: its bundle is staged, one set of stage files per trade-off, because "
            "each trade-off has its own exit thresholds (policy). runtime_tradeoff=True is not supported for a "
            "staged bundle: pass `tradeoffs` (and a policy calibrated at each) instead."
        )
    if _check_compact_setting(compact) is True:
        raise ValueError(
            f"Model '{model.name}' has exits: compact=True is not supported for a staged bundle (its stage files are "
            "cut from the uncompacted model). Leave compact unset."
        )
    if validation.check_bool(int8_io, "int8_io"):
        raise ValueError(
            "`int8_io=True` is not supported for a staged bundle: stages hand float32 features to each other "
            "(int8 stages still compute in int8 inside). Leave int8_io unset."
        )
    if _check_wrappers(model, quantize):
        raise ValueError(
            f"Model '{model.name}' is quantization-aware trained (TF-MOT QuantizeWrapper layers); a staged bundle "
            "of it is not supported. Export the model without exits, or quantize with quantize='int8' and "
            "`representative_data` instead."
        )
    _check_quantize(quantize, representative_data is not None, False)
    return ExportOptions(
        smart=False,
        quantization_aware=False,
        tradeoff=None,
        runtime_tradeoff=False,
        quantize=quantize,
        check_tradeoffs=(),
        atol=validation.check_positive(atol, "atol"),
        min_agreement=validation.check_real(min_agreement, "min_agreement", low=0.0, high=1.0),
        int8_io=False,
        max_samples=validation.check_int(max_samples, "max_samples", minimum=1),
    )


def _check_model(model, quantize):
    """Refuses what cannot be exported; returns whether the model is quantization-aware."""
    quantization_aware = _check_wrappers(model, quantize)
    inputs.check_single_io(model, "`to_tflite`")
    return quantization_aware


def _check_wrappers(model, quantize):
    """Refuses TF-MOT pruning wrappers; returns whether the model is quantization-aware."""
    if not isinstance(model, keras.Model):
        raise TypeError(f"`model` must be a Keras model. Received: {type(model).__name__}")
    layer_classes = {type(layer).__name__ for layer in _compat.flatten_layers(model)}
    wrapped = sorted(layer_classes & set(_TFMOT_PRUNE_WRAPPERS))
    if wrapped:
        raise ValueError(
            f"Model '{model.name}' still holds TF-MOT pruning wrappers {wrapped}. Call "
            "keras_smart.pruning.strip_pruning(model) before exporting."
        )
    quantization_aware = bool(layer_classes & set(_TFMOT_QUANTIZE_WRAPPERS))
    if quantization_aware and quantize != "int8":
        raise ValueError(
            f"Model '{model.name}' is quantization-aware trained (TF-MOT QuantizeWrapper layers): it exports "
            f"as int8 with the ranges it learned. Pass quantize='int8'. Received: quantize={quantize!r}"
        )
    return quantization_aware


def _baked_tradeoff(model, smart, tradeoff, runtime_tradeoff):
    """The trade-off to bake into the file (None: a runtime-trade-off file or a plain model)."""
    if runtime_tradeoff and tradeoff is not None:
        raise ValueError(
            "Pass either `tradeoff` (bake one trade-off into the file) or `runtime_tradeoff=True` (the "
            f"trade-off becomes an input), not both. Received: tradeoff={tradeoff!r}, runtime_tradeoff=True"
        )
    if not smart and (tradeoff is not None or runtime_tradeoff):
        raise ValueError(
            f"Model '{model.name}' is a plain Keras model ({type(model).__name__}); it has no trade-off. "
            "Leave `tradeoff` and `runtime_tradeoff` unset, or export the SmartModel itself."
        )
    if tradeoff is not None:
        return validation.check_tradeoff(tradeoff, "tradeoff")
    return get_tradeoff(model) if smart and not runtime_tradeoff else None


def _check_grouped_conv3d(model, smart, runtime_tradeoff):
    """A baked file runs Keras's own Conv3D, and LiteRT's CONV_3D has no groups."""
    grouped = [
        layer.name
        for layer in _compat.flatten_layers(model)
        if isinstance(layer, keras.layers.Conv3D) and getattr(layer, "groups", 1) != 1
    ]
    if grouped and not runtime_tradeoff:
        raise ValueError(
            f"Layers {grouped} are grouped Conv3D layers, and LiteRT's CONV_3D has no groups, so a "
            "file with them baked in cannot run. Ways forward: "
            + ("export with runtime_tradeoff=True (keras_smart's conditional Conv3D computes one "
               "convolution per group, which LiteRT runs), or " if smart else "")
            + "rebuild those layers with groups=1."
        )


def _check_quantize(quantize, calibrated, int8_io):
    """`calibrated`: int8 ranges are known (representative data, or a quantization-aware model)."""
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(
            f"Unknown `quantize`: expected one of {list(QUANTIZE_CHOICES)}. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and not calibrated:
        raise ValueError(
            "quantize='int8' needs `representative_data` (a few hundred typical inputs, e.g. "
            "x_train[:200]) to calibrate activation ranges. Received: representative_data=None"
        )
    if int8_io and quantize != "int8":
        raise ValueError(f"`int8_io=True` needs quantize='int8'. Received: quantize={quantize!r}")
