"""The one place that chooses between Keras 3 and the legacy tf_keras flavour.

TensorFlow selects tf_keras when `TF_USE_LEGACY_KERAS` is "true", "True" or
"1" before it is imported; keras_smart reads the variable by the same rule,
once, at import. Every other module imports `keras` from here and never
imports `keras` or `tf_keras` itself. Keras 3 must run on its TensorFlow
backend: the conditional layers, attacks and train step are TensorFlow code.

This is also the only module that touches private Keras (and LiteRT) APIs;
tests/test_compat.py checks each one in both flavours, so a Keras release that
changes one fails there, by name.
"""

import contextlib
import os

import tensorflow as tf

# Exactly TensorFlow's rule (tensorflow/__init__.py): other spellings ("yes", "TRUE") select Keras 3.
IS_LEGACY = os.environ.get("TF_USE_LEGACY_KERAS", None) in ("true", "True", "1")

if IS_LEGACY:
    import tf_keras as keras  # pylint: disable=g-import-not-at-top
    from tf_keras.src.engine.functional import Functional  # pylint: disable=g-import-not-at-top
else:
    import keras  # pylint: disable=g-import-not-at-top
    from keras.src.models.functional import Functional  # pylint: disable=g-import-not-at-top

    if keras.backend.backend() != "tensorflow":
        raise ImportError(
            f"keras_smart needs Keras's TensorFlow backend; this Keras runs on {keras.backend.backend()!r} "
            "(KERAS_BACKEND). Set KERAS_BACKEND=tensorflow, or unset it, before Python imports keras."
        )

FLAVOUR = "tf_keras" if IS_LEGACY else "keras3"

# add_weight's keyword that keeps a float32 weight float32 under mixed precision.
NO_AUTOCAST = {"experimental_autocast": False} if IS_LEGACY else {"autocast": False}

# The attribute (and weight name) of DepthwiseConv2D's kernel differs between the flavours.
DEPTHWISE_KERNEL = "depthwise_kernel" if IS_LEGACY else "kernel"

__all__ = [
    "DEPTHWISE_KERNEL",
    "NO_AUTOCAST",
    "FLAVOUR",
    "Functional",
    "IS_LEGACY",
    "AttentionProjectionsHook",
    "MultiWorkerFit",
    "apply_gradients",
    "attention_projections",
    "build_attention_projections",
    "custom_object_scope",
    "flatten_layers",
    "graph_nodes",
    "is_builtin_layer_class",
    "is_functional",
    "is_sequential",
    "keras",
    "lambda_output_shape",
    "loss_metric",
    "register_serializable",
    "replace_attention_projection",
    "scale_loss",
    "tf_variable",
    "training_loss",
    "weight_name",
]


def training_loss(model, x, y, y_pred, sample_weight, batch_size, extra_loss=None):
    """The compiled loss plus regularization (plus `extra_loss`), recorded in the "loss" log, as `fit` would.

    `extra_loss` is a scalar added to the total (e.g. TRADES' KL term), scaled
    for distribution like the compiled loss, and counted in the logged loss.
    Both flavours go through public APIs: Keras 3's `Model.compute_loss` and the
    model's own "loss" metric; tf_keras's `compute_loss` / `compiled_loss`
    (which log the loss themselves).
    """
    if IS_LEGACY:
        if extra_loss is None:
            return model.compute_loss(x, y, y_pred, sample_weight)
        # What compute_loss does, with the extra term counted (and logged) like a regularization loss.
        regularization = list(model.losses) + [extra_loss]
        return model.compiled_loss(y, y_pred, sample_weight, regularization_losses=regularization)
    loss = model.compute_loss(x=x, y=y, y_pred=y_pred, sample_weight=sample_weight, training=True)
    # Under tf.distribute each replica's loss is scaled by 1/replicas (Keras 3 does the same in
    # compute_loss's callers); the logged value is the unscaled one.
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    if extra_loss is not None:
        loss = loss + tf.cast(extra_loss, loss.dtype) / replicas
    loss_metric(model).update_state(loss * replicas, sample_weight=batch_size)
    return loss


def loss_metric(model):
    """The metric a compiled Keras 3 model logs as "loss" (its first metric, by Keras's own order)."""
    for metric in model.metrics:
        if metric.name == "loss":
            return metric
    raise ValueError(f"'{model.name}' has no \"loss\" metric: compile the model with a loss before fit.")


def scale_loss(model, loss):
    """Keras 3 scales the loss for mixed precision and distribution inside the tape."""
    return loss if IS_LEGACY else model.optimizer.scale_loss(loss)


def build_optimizer(model):
    """Creates the compiled optimizer's variables now, eagerly.

    Both flavours otherwise create them inside the first traced train step
    (Keras 3 unless a distribution strategy built them), which TensorFlow then
    traces a second time. tf_keras's legacy optimizers are left alone.
    """
    optimizer = getattr(model, "optimizer", None)
    if not isinstance(optimizer, keras.optimizers.Optimizer) or getattr(optimizer, "built", False):
        return
    with model.distribute_strategy.scope():
        optimizer.build(model.trainable_variables)  # a no-op on a built tf_keras optimizer


def apply_gradients(model, tape, loss):
    """One optimizer step on the model's trainable weights (tf_keras's minimize scales itself)."""
    if IS_LEGACY:
        model.optimizer.minimize(loss, model.trainable_variables, tape=tape)
        return
    weights = model.trainable_weights
    model.optimizer.apply_gradients(zip(tape.gradient(loss, weights), weights))


def register_serializable(cls):
    """Registers `cls` under package "keras_smart" so `.keras` files load it by name."""
    return keras.utils.register_keras_serializable(package="keras_smart")(cls)


def custom_object_scope(objects):
    """A scope in which deserialization resolves the given {name: class} mapping."""
    return keras.utils.custom_object_scope(objects)


def is_builtin_layer_class(cls):
    """Whether `cls` is one of the Keras package's own classes (deserialization finds it by name)."""
    return cls.__module__.split(".")[0] == ("tf_keras" if IS_LEGACY else "keras")


def lambda_output_shape(layer):
    """The `output_shape` a Lambda layer was built with (Keras keeps it private in both flavours)."""
    return layer._output_shape  # pylint: disable=protected-access


def is_sequential(model):
    return isinstance(model, keras.Sequential)


def is_functional(model):
    """True for graph models (Functional and Sequential), False for subclassed ones."""
    return isinstance(model, Functional) or is_sequential(model)


def flatten_layers(model):
    """All layers reachable from `model`, nested models and wrappers included, excluding itself."""
    return list(model._flatten_layers(include_self=False, recursive=True))  # pylint: disable=protected-access


def graph_nodes(model):
    """The calls a Functional `model` is made of, inputs first: (layer, input tensors, output tensors) each.

    Its own graph only (a nested model is one call); tensors are flat lists, each
    `keras.Input` is a call with no inputs. The order is topological.
    """
    rows = []
    by_depth = model._nodes_by_depth  # pylint: disable=protected-access
    for depth in sorted(by_depth, reverse=True):
        for node in by_depth[depth]:
            if IS_LEGACY:
                rows.append((node.layer, list(node.keras_inputs), tf.nest.flatten(node.outputs)))
            else:
                rows.append((node.operation, list(node.input_tensors), list(node.outputs)))
    return rows


def weight_name(variable):
    """The short name of a layer weight ("kernel"), the same in both flavours.

    Keras 3 names a variable "kernel"; tf_keras names it "dense/kernel:0".
    """
    name = variable.name.split(":")[0]
    return name.rsplit("/", 1)[-1]


def tf_variable(variable):
    """The `tf.Variable` behind a layer weight (Keras 3 wraps it), e.g. for `GradientTape.watch`."""
    return variable if isinstance(variable, tf.Variable) else variable.value


# --- MultiHeadAttention's projection sublayers: private attributes and build steps ------------------

# Keras's name of each projection -> the MultiHeadAttention attribute holding it (both flavours).
_ATTENTION_PROJECTIONS = {
    "query": "_query_dense",
    "key": "_key_dense",
    "value": "_value_dense",
    "gate": "_gate_dense",  # Keras 3 with use_gate=True only
    "attention_output": "_output_dense",
}


def attention_projections(layer):
    """{"query", "key", "value", ["gate",] "attention_output": EinsumDense} of a MultiHeadAttention.

    Empty until Keras creates them (Keras 3: `build`; tf_keras: the first call or `from_config`).
    """
    found = {name: getattr(layer, attribute, None) for name, attribute in _ATTENTION_PROJECTIONS.items()}
    return {name: sublayer for name, sublayer in found.items() if sublayer is not None}


def replace_attention_projection(layer, name, new):
    """Makes `new` the projection `name` of MultiHeadAttention `layer`, tracked in the old one's place."""
    attribute = _ATTENTION_PROJECTIONS[name]
    if not IS_LEGACY:  # Keras 3 keeps a replaced sublayer tracked (weights, saving): swap it in place
        tracker = layer._tracker  # pylint: disable=protected-access
        tracker.replace_tracked_value("layers", getattr(layer, attribute), new)
    setattr(layer, attribute, new)  # tf_keras untracks the sublayer an attribute held itself


def _attention_input_shapes(layer, query_shape, value_shape, key_shape=None):
    """{projection name: the shape it is called on} of a MultiHeadAttention called on these shapes."""
    query, value = (tf.TensorShape(s).as_list() for s in (query_shape, value_shape))
    key = value if key_shape is None else tf.TensorShape(key_shape).as_list()
    config = layer.get_config()
    heads = query[:-1] + [config["num_heads"], config["value_dim"]]  # what the output projection sees
    return {"query": query, "key": key, "value": value, "gate": query, "attention_output": heads}


def build_attention_projections(layer):
    """Builds the projections of a tf_keras MultiHeadAttention, which only its first call builds.

    They get the variable names that call would give them. Keras 3 builds them in `build`: no-op.
    """
    if not IS_LEGACY or not getattr(layer, "_built_from_signature", False):
        return
    # pylint: disable=protected-access
    shapes = _attention_input_shapes(layer, layer._query_shape, layer._value_shape, layer._key_shape)
    outside = tf.init_scope if tf.compat.v1.executing_eagerly_outside_functions() else contextlib.nullcontext
    for name, sublayer in attention_projections(layer).items():
        if not sublayer.built:
            with outside(), tf.name_scope(f"{layer.name}/{sublayer.name}/"):
                sublayer.build(shapes[name])


class AttentionProjectionsHook:
    """Mixin for MultiHeadAttention subclasses: `self.projections_created(shapes)` once Keras made them.

    Keras 3 creates and builds the projections in `build`; tf_keras creates
    them, unbuilt, in its private `_build_from_signature` (called by the first
    call and by `from_config`). The hook then finds them in
    `attention_projections(self)`; `shapes` = {projection name: its input shape}.
    """

    if IS_LEGACY:

        def _build_from_signature(self, query, value, key=None):
            super()._build_from_signature(query, value, key)  # pylint: disable=no-member
            shapes = (self._query_shape, self._value_shape, self._key_shape)  # pylint: disable=protected-access
            self.projections_created(_attention_input_shapes(self, *shapes))

    else:

        def build(self, query_shape, value_shape, key_shape=None):
            super().build(query_shape, value_shape, key_shape)  # pylint: disable=no-member
            self.projections_created(_attention_input_shapes(self, query_shape, value_shape, key_shape))

    def projections_created(self, shapes):
        """Called right after Keras created this layer's projection sublayers."""


class MultiWorkerFit:
    """Mixin for a Keras model class: Keras 3's `fit` and `evaluate` under MultiWorkerMirroredStrategy.

    With several workers Keras 3 fails twice (keras-team/keras#20585): it builds
    the model from the first batch averaged across replicas by an eager
    `strategy.reduce`, which refuses a batch of several tensors; and it averages
    each step's logs with `strategy.reduce(..., axis=0)`, which refuses the
    scalars that logs are. The build reads only shapes and dtypes, which one
    replica's batch has as well; logs given a leading axis of 1 average across
    replicas as Keras means them to. Other strategies, and tf_keras, are left
    as they are.
    """

    if not IS_LEGACY:

        def _maybe_symbolic_build(self, iterator=None, data_batch=None):
            if iterator is None or not _multi_worker(self._distribute_strategy):  # pylint: disable=protected-access
                return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)  # pylint: disable=no-member
            for _, _, batches in iterator:  # Keras's own way to its first batch
                data_batch = next(batches)
                break
            strategy = self.distribute_strategy

            def local(value):
                if isinstance(value, tf.distribute.DistributedValues):
                    return strategy.experimental_local_results(value)[0]
                return value

            return super()._maybe_symbolic_build(data_batch=tf.nest.map_structure(local, data_batch))  # pylint: disable=no-member

        def compute_metrics(self, x, y, y_pred, sample_weight=None):
            logs = super().compute_metrics(x, y, y_pred, sample_weight)  # pylint: disable=no-member
            if not _multi_worker(tf.distribute.get_strategy()):
                return logs
            return tf.nest.map_structure(lambda value: tf.expand_dims(value, 0), logs)


def _multi_worker(strategy):
    """Whether `strategy` is a MultiWorkerMirroredStrategy with several workers (Keras 3's own test)."""
    from keras.src.backend.tensorflow import trainer  # pylint: disable=g-import-not-at-top

    return strategy is not None and trainer._collective_all_reduce_multi_worker(strategy)  # pylint: disable=protected-access
