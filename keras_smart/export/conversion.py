"""Keras model to `.tflite` bytes: a serving function with named tensors, converted with builtin operators only."""

import dataclasses
import tempfile
import warnings

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart.conversion import strip
from keras_smart.export.result import INPUT_NAME
from keras_smart.export.result import OUTPUT_NAME
from keras_smart.export.result import TRADEOFF_NAME
from keras_smart.export.result import ExportError
from keras_smart.layers import base


def serving_function(model, options):
    """(tf.function with a named signature, the Keras model whose variables it reads).

    A runtime-trade-off function takes the trade-off as a second input (float32,
    shape [1], clipped to [0, 1]) and computes each path with its own constant
    kernels; any other runs `model`, a plain model (`exported_model` strips a
    baked trade-off first). Both run with noise at its expectation
    (`expected_noise()`), NoiseInjection included.
    """
    spec = tf.TensorSpec((None,) + tuple(model.inputs[0].shape[1:]), tf.float32, name=INPUT_NAME)
    if options.runtime_tradeoff:
        tradeoff_spec = tf.TensorSpec((1,), tf.float32, name=TRADEOFF_NAME)

        def serve_runtime(input, tradeoff):  # pylint: disable=redefined-builtin
            tradeoff = tf.clip_by_value(tf.reshape(tradeoff, [1]), 0.0, 1.0)
            with base.separate_paths(), base.expected_noise(), base.tradeoff_override(tradeoff):
                outputs = model(input, training=False)
            return {OUTPUT_NAME: tf.cast(outputs, tf.float32)}

        return tf.function(serve_runtime, input_signature=[spec, tradeoff_spec]), model
    if options.smart:
        raise ValueError("serving_function takes a baked trade-off as a plain model: see exported_model.")

    def serve(input):  # pylint: disable=redefined-builtin
        with base.expected_noise():  # NoiseInjection layers (strip keeps them) at their expectation: identity
            outputs = model(input, training=False)
        return {OUTPUT_NAME: tf.cast(outputs, tf.float32)}

    return tf.function(serve, input_signature=[spec]), model


def exported_model(model, options):
    """(the Keras model a file is converted from, its `ExportOptions` for `tflite_bytes`).

    A baked trade-off of a SmartModel is `keras_smart.strip(model, tradeoff,
    compact=options.compact)`, converted as a plain model; a runtime-trade-off
    file and a plain model convert `model` itself.
    """
    if not options.smart or options.runtime_tradeoff:
        return model, options
    plain = strip(model, tradeoff=options.tradeoff, compact=options.compact)
    return plain, dataclasses.replace(options, smart=False, tradeoff=None, compact=False)


def representative_dataset(samples, options):
    """The converter's calibration generator: one input per step, cycling through the check trade-offs."""
    tradeoffs = options.check_tradeoffs or (None,)

    def generate():
        for i, x in enumerate(samples):
            example = {INPUT_NAME: x[None]}
            if options.runtime_tradeoff:
                example[TRADEOFF_NAME] = np.array([tradeoffs[i % len(tradeoffs)]], np.float32)
            yield example

    return generate


def tflite_bytes(model, options, representative):
    """The `.tflite` bytes of `model`, converted with builtin operators only.

    Args:
      model: the model to export.
      options: its `ExportOptions`.
      representative: float32 calibration inputs for int8, or None.

    Raises:
      ExportError: the converter failed (e.g. the graph needs Flex / select-TF ops).
    """
    function, holder = serving_function(model, options)
    generator = None if representative is None else representative_dataset(representative, options)
    return function_bytes(function, holder.weights, options, generator, model.name)


def function_bytes(function, weights, options, representative, name):
    """The `.tflite` bytes of a serving `tf.function` (its input signature names the file's inputs).

    Args:
      function: a `tf.function` with an input signature, returning a dict of named outputs.
      weights: the Keras weights it reads (frozen into the file as constants).
      options: the `ExportOptions` (quantization).
      representative: the int8 calibration generator (a callable yielding
        {input name: one example}), or None.
      name: the model's name, for errors.

    Raises:
      ExportError: the converter failed (e.g. the graph needs Flex / select-TF ops).
    """
    module = tf.Module()
    # Keras 3 wraps its tf.Variables: track them explicitly, so the SavedModel freezes them.
    module.weights_ = [_compat.tf_variable(v) for v in weights]
    module.serve = function
    with tempfile.TemporaryDirectory(prefix="keras_smart_export_") as saved:
        try:
            signatures = {"serving_default": function.get_concrete_function()}
            tf.saved_model.save(module, saved, signatures=signatures)
            converter = tf.lite.TFLiteConverter.from_saved_model(saved)
            _configure(converter, options, representative)
            with warnings.catch_warnings():  # int8 calibration runs TF's own (deprecated) interpreter
                warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
                return converter.convert()
        except Exception as e:  # pylint: disable=broad-except
            raise _conversion_error(name, e) from e


def _configure(converter, options, representative):
    """Builtin operators only, and the quantization `options` ask for."""
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if options.quantize is not None:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    if options.quantize == "float16":
        converter.target_spec.supported_types = [tf.float16]
    elif options.quantize == "int8":
        if representative is not None:  # full integer; a quantization-aware model has its ranges
            converter.representative_dataset = representative
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if options.int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8


def _conversion_error(name, error):
    message = str(error)
    flex = any(word in message.lower() for word in ("flex", "select", "not supported"))
    hint = (
        " The graph needs operators outside LiteRT's builtin set (Flex / select-TF ops), which "
        "Android's default runtime cannot run: replace the layers that use them."
        if flex
        else ""
    )
    return ExportError(f"Conversion of '{name}' to LiteRT failed.{hint} Converter said: {message}")
