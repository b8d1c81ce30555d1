"""OAT's FiLM: dual batch-norm followed by a per-channel scale and shift computed from lam."""

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import validation
from keras_smart.layers import dual_batch_norm

keras = _compat.keras

_LEAKY_SLOPE = 0.01  # PyTorch's LeakyReLU default, as in OAT's FiLM MLP.
_OAT_TRADEOFFS = config_lib.OAT_TRADEOFFS


@_compat.register_serializable
class FiLMDualBatchNormalization(dual_batch_norm.DualBatchNormalization):
    """Dual batch-norm plus FiLM: `BN(x) * (1 + gamma(lam)) + beta(lam)`, per channel.

    `[gamma, beta] = Dense(2C)(LeakyReLU(Dense(2C)(encode(lam))))`. The second
    Dense starts at zero, so a freshly converted layer is exactly the plain
    batch-norm at every lam (our choice, so that `convert` preserves outputs).

    Args (besides BatchNormalization's own):
      film_encoding: "scalar" (lam itself, continuous; default) or "orthogonal"
        (a fixed random orthonormal code per value in `film_tradeoffs`; lam is
        snapped to the nearest listed value).
      film_tradeoffs: the selectable lam values for the orthogonal encoding
        (`film_lambdas`, its old name, works for one more release).
      film_code_size: length of the orthogonal codes (default 128).
      seed: seed of the orthogonal codes and the first Dense's initialiser.

    Example:
      >>> layer = keras_smart.layers.FiLMDualBatchNormalization()
      >>> tuple(layer(tf.random.normal((2, 4, 4, 8))).shape)
      (2, 4, 4, 8)
    """

    conditional_config_keys = ("film_encoding", "film_tradeoffs", "film_code_size", "seed")

    def __init__(
        self,
        *args,
        film_encoding="scalar",
        film_tradeoffs=_OAT_TRADEOFFS,
        film_code_size=128,
        seed=0,
        film_lambdas=validation.UNSET,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        film_tradeoffs = validation.renamed_argument(
            type(self).__name__, "film_lambdas", film_lambdas, "film_tradeoffs", film_tradeoffs, _OAT_TRADEOFFS
        )
        options = self.check_options(
            film_encoding=film_encoding, film_tradeoffs=film_tradeoffs, film_code_size=film_code_size, seed=seed
        )
        self.film_encoding = options["film_encoding"]
        self.film_tradeoffs = options["film_tradeoffs"]
        self.film_code_size = options["film_code_size"]
        self.seed = options["seed"]

    @classmethod
    def check_options(
        cls, film_encoding="scalar", film_tradeoffs=_OAT_TRADEOFFS, film_code_size=128, seed=0
    ):
        """Validates this class's own arguments; returns them normalised."""
        encoding = config_lib.coerce_enum(config_lib.FiLMEncoding, film_encoding, "film_encoding")
        tradeoffs = tuple(config_lib.check_tradeoff(v, "film_tradeoffs[i]") for v in film_tradeoffs)
        if not tradeoffs:
            raise ValueError("`film_tradeoffs` must list at least one trade-off value.")
        return {
            "film_encoding": encoding.value,
            "film_tradeoffs": tradeoffs,
            # Orthonormal codes: one per trade-off value.
            "film_code_size": validation.check_int(film_code_size, "film_code_size", minimum=len(tradeoffs)),
            "seed": validation.check_seed(seed),
        }

    def build(self, input_shape):
        super().build(input_shape)
        channels = int(input_shape[self._axis(len(input_shape))])
        orthogonal = self.film_encoding == config_lib.FiLMEncoding.ORTHOGONAL.value
        code_size = self.film_code_size if orthogonal else 1
        if orthogonal:
            rng = np.random.default_rng(self.seed)
            q, _ = np.linalg.qr(rng.standard_normal((code_size, len(self.film_tradeoffs))))
            self.film_codes = self.add_weight(
                name="film_codes",
                shape=(len(self.film_tradeoffs), code_size),
                initializer=keras.initializers.Constant(q.T.astype("float32")),
                trainable=False,
                **_compat.NO_AUTOCAST,
            )
        shapes = {
            "film_kernel_1": ((code_size, 2 * channels), keras.initializers.GlorotUniform(self.seed)),
            "film_bias_1": ((2 * channels,), "zeros"),
            "film_kernel_2": ((2 * channels, 2 * channels), "zeros"),
            "film_bias_2": ((2 * channels,), "zeros"),
        }
        for name, (shape, initializer) in shapes.items():
            setattr(
                self,
                name,
                self.add_weight(
                    name=name, shape=shape, initializer=initializer, trainable=True, **_compat.NO_AUTOCAST
                ),
            )

    def encode(self, lam):
        """lam (scalar or per-sample vector) -> a (n, code) batch of FiLM inputs."""
        lam = tf.reshape(tf.cast(lam, tf.float32), (-1,))
        if self.film_encoding == config_lib.FiLMEncoding.SCALAR.value:
            return lam[:, None]
        table = tf.constant(self.film_tradeoffs, tf.float32)
        index = tf.argmin(tf.abs(lam[:, None] - table[None, :]), axis=1)
        return tf.gather(tf.cast(self.film_codes, tf.float32), index)

    def conditioning_weight_names(self):
        film = tuple(n for n in (_compat.weight_name(v) for v in self.weights) if n.startswith(("film_kernel", "film_bias")))
        return super().conditioning_weight_names() + film

    def film(self, lam):
        """The per-channel (gamma, beta) at lam, each of shape (n, C)."""
        hidden = tf.matmul(self.encode(lam), self.film_kernel_1) + self.film_bias_1
        hidden = tf.nn.leaky_relu(hidden, alpha=_LEAKY_SLOPE)
        out = tf.matmul(hidden, self.film_kernel_2) + self.film_bias_2
        return tf.split(out, 2, axis=-1)

    def call(self, inputs, training=None, mask=None):
        dual_batch_norm.check_no_mask(self, mask)
        lam = self.current_tradeoff(per_sample=True)
        x = self.normalize(inputs, training, self.current_tradeoff())
        gamma, beta = self.film(lam)
        rank = x.shape.rank
        shape = [-1] + [1] * (rank - 1)
        shape[self._axis(rank)] = gamma.shape[-1]
        x = x * (1.0 + tf.reshape(gamma, shape)) + tf.reshape(beta, shape)
        return tf.cast(x, self.compute_dtype)

    def source_config(self):
        # Folding FiLM into the affine parameters needs both of them.
        return {**super().source_config(), "center": True, "scale": True}

    def folded_weights(self, tradeoff):
        folded = super().folded_weights(tradeoff)
        channels = folded["moving_mean"].shape[0]
        gamma_f, beta_f = (np.asarray(t.numpy())[0] for t in self.film(tf.constant(tradeoff)))
        gamma = folded.get("gamma", np.ones(channels, np.float32))
        beta = folded.get("beta", np.zeros(channels, np.float32))
        folded["gamma"] = gamma * (1.0 + gamma_f)
        folded["beta"] = beta * (1.0 + gamma_f) + beta_f
        return folded

    def get_config(self):
        return {
            **super().get_config(),
            "film_encoding": self.film_encoding,
            "film_tradeoffs": list(self.film_tradeoffs),
            "film_code_size": self.film_code_size,
            "seed": self.seed,
        }

