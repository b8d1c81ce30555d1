"""ExitPolicy: per-exit entropy thresholds for one multi-exit model, with the costs they were set for."""

import dataclasses
import functools
import json
import math
import numbers

import numpy as np
import tensorflow as tf

from keras_smart import inputs as inputs_lib
from keras_smart import validation
from keras_smart.exits import costs
from keras_smart.exits import routing
from keras_smart.exits import structure
from keras_smart.layers import base

_JSON_TYPE = "keras_smart.exits.ExitPolicy"


@dataclasses.dataclass(frozen=True)
class ExitPolicy:
    """Entropy thresholds that send each input out at the first confident exit (RDI-Nets).

    Made by `keras_smart.exits.calibrate`. An input leaves at the first side
    exit k whose softmax entropy is below `thresholds[k]`, else at the final
    output. The model runs in inference mode, with weight noise (float, floats)
    at its expectation, as `strip` and export compute, and at the model's
    current trade-off (`tradeoff` records the one the thresholds were set at;
    `predict` and the other methods neither read nor change it).

    Attributes:
      thresholds: E - 1 entropy thresholds (natural log), one per side exit.
      macs: `exit_macs(model)` at calibration: E staged MAC counts per example.
      exits: the names of the layers the side exits hang on.
      model_name: the name of the model it was calibrated on.
      budget: the MAC budget it was calibrated for (a share of macs[-1]), or None.
      tradeoff: the SmartModel's trade-off at calibration, or None (plain model).

    Example:
      >>> multi = keras_smart.exits.attach(cnn, after=["conv"])
      >>> policy = keras_smart.exits.calibrate(multi, x, shares=[0.25, 0.75])
      >>> policy.exit_shares(multi, x).tolist()
      [0.25, 0.75]
      >>> keras_smart.exits.ExitPolicy.from_json(policy.to_json()) == policy
      True
    """

    thresholds: tuple
    macs: tuple
    exits: tuple
    model_name: str
    budget: float = None
    tradeoff: float = None

    def __post_init__(self):
        thresholds = _reals(self.thresholds, "thresholds")
        macs = _ints(self.macs, "macs")
        exits = tuple(self.exits) if isinstance(self.exits, (list, tuple)) else None
        if not thresholds or len(macs) != len(thresholds) + 1 or exits is None or len(exits) != len(thresholds):
            raise ValueError(
                "An ExitPolicy needs E - 1 >= 1 `thresholds`, E `macs` and E - 1 `exits` (after-layer names). "
                f"Received: {len(thresholds)} thresholds, {len(macs)} macs, exits={self.exits!r}"
            )
        if any(not isinstance(e, str) for e in exits) or not isinstance(self.model_name, str):
            raise TypeError(f"`exits` and `model_name` must be strings. Received: {exits!r}, {self.model_name!r}")
        if list(macs) != sorted(macs):
            raise ValueError(f"`macs` must be non-decreasing (staged costs). Received: {macs}")
        budget = None if self.budget is None else validation.check_real(
            self.budget, "budget", low=0.0, high=1.0, low_open=True, meaning="(a share of the full model's MACs)")
        tradeoff = None if self.tradeoff is None else validation.check_tradeoff(self.tradeoff)
        for name, value in (("thresholds", thresholds), ("macs", macs), ("exits", exits),
                            ("budget", budget), ("tradeoff", tradeoff)):
            object.__setattr__(self, name, value)

    def route(self, logits_list):
        """The exit of each example: `first_confident(logits_list, self.thresholds)`, int32 [B].

        Example:
          >>> policy = keras_smart.exits.ExitPolicy((0.5,), (10, 30), ("conv",), "cnn")
          >>> policy.route([tf.constant([[9.0, 0.0], [0.0, 0.0]]), tf.zeros([2, 2])]).numpy().tolist()
          [0, 1]
        """
        return routing.first_confident(logits_list, self.thresholds)

    def check_model(self, model):
        """Raises ValueError unless `model` is the multi-exit model this policy was calibrated for.

        Compares the model's name, its number of outputs, the layers its exits
        hang on, and `exit_macs` (at the policy's trade-off): a policy of
        another model, another exit layout, or other masks fails.
        """
        try:
            points = structure.exit_points(model)
        except ValueError as error:
            raise ValueError(f"This ExitPolicy is for model '{self.model_name}'; {error}") from None
        found = {
            "name": model.name,
            "outputs": len(model.outputs),
            "exits": tuple(after for _, after in points),
        }
        wanted = {"name": self.model_name, "outputs": len(self.macs), "exits": self.exits}
        if found == wanted:
            found["macs"], wanted["macs"] = costs.exit_macs(model, tradeoff=self.tradeoff), self.macs
        differ = [key for key in found if found[key] != wanted[key]]
        if differ:
            listed = "; ".join(f"{k}: policy {wanted[k]!r}, model {found[k]!r}" for k in differ)
            raise ValueError(
                f"This ExitPolicy was calibrated for model '{self.model_name}' with exits after "
                f"{list(self.exits)}, not for model '{model.name}' ({listed}). Calibrate one for this model: "
                "keras_smart.exits.calibrate(model, data, budget=...)."
            )

    def predict(self, model, x, batch_size=256):
        """Class ids and the exit each input leaves at.

        Args:
          model: the multi-exit model the policy was calibrated for (checked).
          x: inputs [N, ...], an (x, y) tuple, or a tf.data.Dataset of batches.
          batch_size: rows per forward pass.

        Returns:
          (class_ids, exit_ids): np.int64 [N] each; exit_ids in [0, E - 1].
        """
        self.check_model(model)
        return routed_predictions(model, x, self.thresholds, batch_size)

    def exit_shares(self, model, x, batch_size=256):
        """The share of `x` leaving at each exit, an np.float64 array [E] summing to 1."""
        _, exit_ids = self.predict(model, x, batch_size)
        return np.bincount(exit_ids, minlength=len(self.macs)) / len(exit_ids)

    def expected_macs(self, model, x, batch_size=256):
        """The mean MACs per input of `x` under this policy, as a share of the full model's (macs[-1])."""
        shares = self.exit_shares(model, x, batch_size)
        return float(np.dot(shares, self.macs) / self.macs[-1])

    def to_json(self):
        """This policy as JSON text (`ExitPolicy.from_json` reads it back)."""
        return json.dumps({"type": _JSON_TYPE, **dataclasses.asdict(self)}, indent=2)

    @classmethod
    def from_json(cls, text):
        """The ExitPolicy that `to_json` wrote."""
        values = json.loads(text)
        if not isinstance(values, dict) or values.pop("type", None) != _JSON_TYPE:
            raise ValueError(f"Not an ExitPolicy written by ExitPolicy.to_json: {str(text)[:80]!r}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - fields)
        missing = sorted({"thresholds", "macs", "exits", "model_name"} - set(values))
        if unknown or missing:
            raise ValueError(f"ExitPolicy JSON with unknown field(s) {unknown} or missing {missing}. Fields: {sorted(fields)}")
        return cls(**values)


def exit_inputs(model, data):
    """The inputs of `data` (an (x, y) tuple, x, or a tf.data.Dataset) as one float32 array."""
    if isinstance(data, tuple) and len(data) == 2:
        data = data[0]
    shape = tuple(model.inputs[0].shape)
    return inputs_lib.to_arrays(data, labels=False, input_shape=shape)


def _batched(model, data, batch_size, fn):
    """`fn(logits_list)` on every batch of `data`, under inference mode and expected noise, as NumPy."""
    batch_size = validation.check_int(batch_size, "batch_size", minimum=1)
    x = exit_inputs(model, data)

    def outputs(batch):
        with base.expected_noise():  # read while tracing
            logits = [tf.cast(o, tf.float32) for o in model(batch, training=False)]
        return fn(logits)

    # A fresh callable per call: keyed by code, TensorFlow would count every call's trace as a retrace.
    forward = tf.function(functools.partial(outputs), reduce_retracing=True)

    parts = [forward(tf.constant(x[i : i + batch_size])) for i in range(0, len(x), batch_size)]
    return tf.nest.map_structure(lambda *p: np.concatenate([np.asarray(v) for v in p], axis=-1), *parts)


def side_entropies(model, data, batch_size=256):
    """np.float32 [E - 1, N]: the entropy of every side exit's prediction on every input."""
    return _batched(model, data, batch_size, lambda logits: tf.stack([routing.entropy(l) for l in logits[:-1]]))


def routed_predictions(model, data, thresholds, batch_size=256):
    """(class ids, exit ids), np.int64 [N] each, with `first_confident` routing at `thresholds`."""

    def route(logits):
        exit_ids = routing.first_confident(logits, thresholds)
        classes = tf.stack([tf.argmax(l, axis=-1, output_type=tf.int64) for l in logits])  # [E, B]
        return tf.gather(tf.transpose(classes), exit_ids, batch_dims=1), tf.cast(exit_ids, tf.int64)

    class_ids, exit_ids = _batched(model, data, batch_size, route)
    return class_ids.astype(np.int64), exit_ids.astype(np.int64)


def _reals(values, name):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"`{name}` must be a sequence of numbers. Received: {name}={values!r}")
    values = tuple(float(validation.check_real(v, f"{name}[i]")) for v in values)
    if not all(math.isfinite(v) for v in values):
        raise ValueError(f"`{name}` must be finite. Received: {values}")
    return values


def _ints(values, name):
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"`{name}` must be a sequence of ints. Received: {name}={values!r}")
    if not all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError(f"`{name}` must hold ints >= 0. Received: {name}={values!r}")
    return tuple(int(v) for v in values)
