"""RelaxSchedule: the Keras callback that grows Binary-Relax's eta each epoch, then switches to pure Q."""

from keras_smart import _compat
from keras_smart import validation
from keras_smart.quantization.finalize import quantized_layers

keras = _compat.keras

_INF = float("inf")


class RelaxSchedule(keras.callbacks.Callback):
    """Grows the relaxation weight eta of every quantized layer during `fit` (Binary-Relax's schedule).

    A layer relaxed by `keras_smart.quantization.binary_relax` computes with
    U = (W + eta * Q(W)) / (1 + eta). At the start of epoch e (0-based) this
    callback sets eta = `eta` * `growth` ** e on every quantized layer for
    e < `pure_from_epoch`, and eta = +inf (U = Q(W): the model computes with
    exactly quantized kernels) from epoch `pure_from_epoch` on. The authors'
    code uses eta = 1, growth = 1.05, pure Q from epoch 120. The value of each
    epoch goes into the logs as "relax_eta" (History, TensorBoard).

    Args:
      pure_from_epoch: int >= 1, the first epoch trained with pure Q; the fit
        must run past it (`epochs` > `pure_from_epoch`).
      eta: the eta of epoch 0, a real number > 0 (default 1.0).
      growth: the factor eta grows by each epoch, a real number >= 1 (default 1.05).

    Raises:
      TypeError, ValueError: bad arguments (at construction).
      ValueError: at the start of `fit`, when the model has no quantized layers
        or when `fit`'s `epochs` never reach `pure_from_epoch` (the model would
        end training still relaxed).

    Example:
      >>> from keras_smart import quantization
      >>> relaxed = quantization.binary_relax(cnn, "ternary")
      >>> relaxed.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> schedule = quantization.RelaxSchedule(pure_from_epoch=2, eta=1.0, growth=2.0)
      >>> history = relaxed.fit(x, y, epochs=3, verbose=0, callbacks=[schedule])
      >>> history.history["relax_eta"]
      [1.0, 2.0, inf]
    """

    def __init__(self, pure_from_epoch, eta=1.0, growth=1.05):
        super().__init__()
        self.pure_from_epoch = validation.check_int(pure_from_epoch, "pure_from_epoch", minimum=1)
        self.eta = validation.check_real(eta, "eta", low=0.0, high=_INF, low_open=True, high_open=True)
        self.growth = validation.check_real(growth, "growth", low=1.0, high=_INF, high_open=True)
        self._layers = []
        self._current = None

    def eta_at(self, epoch):
        """The eta of `epoch` (0-based): `eta` * `growth` ** epoch, or +inf from `pure_from_epoch` on."""
        if epoch >= self.pure_from_epoch:
            return _INF
        try:
            return self.eta * self.growth**epoch
        except OverflowError:
            return _INF

    def on_train_begin(self, logs=None):
        self._layers = quantized_layers(self.model)
        if not self._layers:
            raise ValueError(
                f"Model '{self.model.name}' has no quantized layers, so RelaxSchedule has nothing to "
                "schedule. Relax the model first: keras_smart.quantization.binary_relax(model, bits=...)."
            )
        epochs = (self.params or {}).get("epochs")
        if epochs is not None and self.pure_from_epoch >= epochs:
            raise ValueError(
                f"RelaxSchedule(pure_from_epoch={self.pure_from_epoch}) never finishes: `fit` runs epochs "
                f"0..{epochs - 1}, so the model would end training relaxed, not quantized. Fit for more than "
                f"{self.pure_from_epoch} epochs, or lower `pure_from_epoch` below {epochs}."
            )

    def on_epoch_begin(self, epoch, logs=None):
        self._current = self.eta_at(epoch)
        for layer in self._layers:
            layer.relax_eta.assign(self._current)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._current is not None:
            logs["relax_eta"] = self._current
