"""SmartModel: the Functional model that owns the shared trade-off its conditional layers read."""

from keras_smart import _compat
from keras_smart.layers import base

keras = _compat.keras


@_compat.register_serializable
class SmartModel(keras.Model):
    """A Functional model whose conditional layers read one shared trade-off variable.

    `keras_smart.convert` returns one. The trade-off lam is a non-trainable
    model weight named "tradeoff": `set_tradeoff` assigns it without retracing,
    `.keras` files and `get_weights`/`set_weights` carry it.

    Its constructor has Functional's exact signature (the flavour's own), so
    `.keras` loading, `keras.models.clone_model` and TF-MOT wrapping rebuild a
    SmartModel rather than a plain Functional model.

    Example:
      >>> smart = keras_smart.convert(model, method="smart")
      >>> smart.tradeoff_variable.numpy()
      0.0
    """

    if _compat.IS_LEGACY:

        def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
            super().__init__(inputs=inputs, outputs=outputs, name=name, trainable=trainable, **kwargs)
            self._create_tradeoff()

    else:

        def __init__(self, inputs, outputs, name=None, **kwargs):
            super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
            self._create_tradeoff()

    def _create_tradeoff(self):
        self._tradeoff = self.add_weight(
            name="tradeoff", shape=(), initializer="zeros", trainable=False
        )
        self.bind_layers()

    @property
    def tradeoff_variable(self):
        """The non-trainable scalar variable holding lam."""
        return self._tradeoff

    def conditional_layers(self):
        """Every conditional layer in the model, nested models and wrappers included."""
        return [l for l in _compat.flatten_layers(self) if isinstance(l, base.ConditionalLayer)]

    def bind_layers(self):
        """Makes every conditional layer read this model's trade-off variable."""
        for layer in self.conditional_layers():
            layer.bind_tradeoff(self._tradeoff)
