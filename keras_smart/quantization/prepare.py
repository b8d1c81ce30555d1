"""binary_relax(): a copy of a model whose conv/dense kernels train towards a low-bit level set."""

from keras_smart import _compat
from keras_smart import conversion
from keras_smart import registry
from keras_smart import training
from keras_smart import validation
from keras_smart.layers import base
from keras_smart.layers import conditional_kernel as ck
from keras_smart.layers import quantized
from keras_smart.quantization import graph as graph_lib

keras = _compat.keras


def binary_relax(model, bits="ternary", *, per_channel=False, skip=None, shortcuts=False, classifier=False, eta=1.0):
    """A copy of `model` whose kernels are trained by Binary-Relax towards `bits`' level set.

    Each chosen kernel W is used as U = (W + eta * Q(W)) / (1 + eta) (Q: the
    projection onto the level set, see `project`), and the gradient at U is
    applied to W; eta is the layer's "relax_eta" weight (`RelaxSchedule` grows
    it during `fit`; +inf = pure Q). `finalize` then makes the kernels exactly
    quantized. Masked weights stay zero: Q is taken over the weights the
    layer's masks keep, one scale for both paths of a SMART kernel.

    Left float by default: batch-norm (never quantized), 1x1 convolutions on a
    residual shortcut (their output reaches an Add through no other kernel
    layer, and the block's input reaches that Add by another branch), the
    classifier (kernel layers whose output reaches a model output through no
    other kernel layer), attention layers, and the layers in `skip`.

    Args:
      model: a SmartModel (comes back a SmartModel at the same trade-off, its
        conditional kernels relaxed), or a plain Functional / Sequential model
        (comes back a SmartModel whose conv/dense layers are the plain
        `keras_smart.layers.Quantized*` classes). Not modified.
      bits: "binary", "ternary" or "int4".
      per_channel: one scale per output channel instead of one per kernel.
      skip: layers to keep float: layer names (a nested model's name keeps
        all its layers) or a predicate `skip(layer) -> bool`.
      shortcuts: quantize the 1x1 shortcut convolutions too.
      classifier: quantize the classifier too.
      eta: the starting relax_eta, >= 0 (+inf: pure Q from the start).

    Returns:
      A new SmartModel (uncompiled).

    Raises:
      ValueError: unknown `bits` (the message lists the choices), a model
        already relaxed, nothing left to quantize, an unknown name in `skip`.
      TypeError: not a Keras graph model, or a setting of the wrong type.

    Example:
      >>> relaxed = keras_smart.quantization.binary_relax(smart, "ternary")
      >>> [l.name for l in keras_smart.quantization.quantized_layers(relaxed)]
      ['conv']
    """
    quantization = {
        "bits": quantized.check_bits(bits),
        "per_channel": validation.check_bool(per_channel, "per_channel"),
    }
    validation.check_bool(shortcuts, "shortcuts")
    validation.check_bool(classifier, "classifier")
    eta = validation.check_real(eta, "eta", low=0.0)
    _check_model(model)
    chosen = _chosen_layers(model, skip, shortcuts=shortcuts, classifier=classifier)

    def to_relaxed(layer, entry):
        if layer.name not in chosen:
            return entry
        if isinstance(layer, ck.ConditionalKernel):
            return {**entry, "config": {**entry["config"], "quantization": dict(quantization)}}
        quantized_class = registry.QUANTIZED[type(layer)]
        layer_config = {**entry["config"], "quantization": dict(quantization)}
        return conversion.retarget_entry(entry, quantized_class, layer_config)

    relaxed_model = conversion.rebuild(model, to_relaxed, training.SmartModel)
    conversion.copy_weights(model, relaxed_model, _copy_layer_weights)
    if isinstance(model, training.SmartModel):
        relaxed_model.tradeoff_variable.assign(model.tradeoff_variable)
    for layer in _compat.flatten_layers(relaxed_model):
        if isinstance(layer, ck.ConditionalKernel) and layer.quantization is not None:
            layer.relax_eta.assign(eta)
    return relaxed_model


def _copy_layer_weights(source, target):
    """Weights of one layer pair where either side is conditional: by name into a newly relaxed
    kernel (it gained relax_eta), as they are otherwise (the same class and weights)."""
    if isinstance(target, ck.ConditionalKernel) and len(target.weights) != len(source.weights):
        base.ConditionalLayer.copy_source_weights(target, source)
    else:
        target.set_weights(source.get_weights())


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`binary_relax` expects a keras.Model. Received: {type(model).__name__}")
    if not _compat.is_functional(model):
        raise TypeError(
            f"`binary_relax` needs a Functional or Sequential model to clone; '{model.name}' is a subclassed "
            f"model ({type(model).__name__}). Rebuild it with the Functional API first."
        )
    layers = _compat.flatten_layers(model)
    relaxed = sorted(l.name for l in layers if isinstance(l, ck.ConditionalKernel) and l.quantization is not None)
    if relaxed:
        raise ValueError(
            f"Model '{model.name}' is already relaxed (quantized layers: {relaxed}). Train it, call "
            "keras_smart.quantization.finalize(model), or relax the float model it came from."
        )
    if not isinstance(model, training.SmartModel) and any(isinstance(l, base.ConditionalLayer) for l in layers):
        raise ValueError(
            f"Model '{model.name}' has conditional layers but is not a SmartModel: pass the SmartModel itself "
            "(what keras_smart.convert returns), or a plain model."
        )


def _candidates(model):
    """The layers binary_relax could quantize: conv/dense kernels (plain of a `QUANTIZED` class, or
    conditional kernels), in `model` and its nested models; attention projections are not listed."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            yield from _candidates(layer)
        elif isinstance(layer, ck.ConditionalKernel) or type(layer) in registry.QUANTIZED:
            yield layer


def _chosen_layers(model, skip, *, shortcuts, classifier):
    """Names of the layers to quantize; raises when none is left."""
    skipped = conversion.skip_predicate(model, skip)
    graph = graph_lib.ModelGraph(model)
    candidates = list(_candidates(model))
    excluded = {}
    for layer in candidates:
        if skipped(layer):
            excluded[layer.name] = "skip"
        elif not shortcuts and graph.is_shortcut(layer):
            excluded[layer.name] = "shortcut"
        elif not classifier and graph.is_classifier(layer):
            excluded[layer.name] = "classifier"
    chosen = {l.name for l in candidates if l.name not in excluded}
    if not chosen:
        left_out = ", ".join(f"{name} ({why})" for name, why in sorted(excluded.items())) or "none"
        raise ValueError(
            f"`binary_relax` found nothing to quantize in model '{model.name}': it quantizes Conv1D/2D/3D, "
            "Conv2DTranspose, DepthwiseConv2D, SeparableConv2D, Dense and EinsumDense layers (plain or "
            f"converted). Left out: {left_out}. Pass classifier=True / shortcuts=True, or a shorter `skip`."
        )
    return chosen
