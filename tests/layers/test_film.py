"""FiLM dual batch-norm: identity at conversion, lam-dependent after training, both encodings."""

import numpy as np
import pytest

import keras_smart
from keras_smart import layers as cl
from tests import models


def _film(**options):
    layer = cl.FiLMDualBatchNormalization(**options)
    layer.build((None, 4, 4, 6))
    return layer


@pytest.mark.parametrize("encoding", ["scalar", "orthogonal"])
def test_fresh_film_is_the_plain_batch_norm_at_every_lam(encoding):
    layer = _film(film_encoding=encoding)
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 6)).astype("float32")
    with cl.tradeoff_override(0.0):
        reference = layer(x).numpy()
    for lam in (0.2, 1.0):
        with cl.tradeoff_override(lam):
            np.testing.assert_allclose(layer(x), reference, atol=1e-6)


def test_film_output_depends_on_lam_once_trained():
    layer = _film()
    layer.film_kernel_2.assign(np.random.default_rng(1).normal(0, 0.5, layer.film_kernel_2.shape))
    x = np.random.default_rng(0).normal(size=(2, 4, 4, 6)).astype("float32")
    outs = []
    for lam in (0.0, 0.5, 1.0):
        with cl.tradeoff_override(lam):
            outs.append(layer(x).numpy())
    assert np.abs(outs[0] - outs[1]).max() > 1e-3 and np.abs(outs[1] - outs[2]).max() > 1e-3


def test_orthogonal_codes_are_orthonormal_and_lam_snaps_to_the_nearest_value():
    layer = _film(film_encoding="orthogonal", film_tradeoffs=(0.0, 0.5, 1.0), film_code_size=16)
    codes = layer.film_codes.numpy()
    np.testing.assert_allclose(codes @ codes.T, np.eye(3), atol=1e-5)
    np.testing.assert_array_equal(layer.encode(0.45).numpy()[0], codes[1])
    np.testing.assert_array_equal(layer.encode(np.array([0.0, 0.9], "float32")).numpy(), codes[[0, 2]])


def test_per_sample_lam_gives_per_sample_scale():
    layer = _film()
    layer.film_kernel_2.assign(np.random.default_rng(1).normal(0, 0.5, layer.film_kernel_2.shape))
    gamma, beta = layer.film(np.array([0.1, 0.4], "float32"))
    assert gamma.shape == (2, 6) and beta.shape == (2, 6)
    assert np.abs(np.asarray(gamma[0]) - np.asarray(gamma[1])).max() > 0


@pytest.mark.parametrize(
    "options, fragment",
    [
        ({"film_encoding": "onehot"}, "Unknown `film_encoding`"),
        ({"film_tradeoffs": (0.0, 2.0)}, r"must be in \[0, 1\]"),
        ({"film_tradeoffs": ()}, "at least one"),
        ({"film_encoding": "orthogonal", "film_code_size": 2}, "film_code_size"),
    ],
)
def test_bad_film_options_are_rejected(options, fragment):
    with pytest.raises(ValueError, match=fragment):
        cl.FiLMDualBatchNormalization(**options)


def test_the_old_option_name_film_lambdas_still_works_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match=r"film_lambdas=...\)` is deprecated.*film_tradeoffs="):
        layer = _film(film_encoding="orthogonal", film_lambdas=(0.0, 1.0), film_code_size=16)
    assert layer.film_tradeoffs == (0.0, 1.0)
    model = models.conv_block_model()
    with pytest.warns(DeprecationWarning, match=r"convert\(film_lambdas=...\)"):
        smart = keras_smart.convert(model, "oat", film_encoding="orthogonal", film_lambdas=(0.0, 1.0))
    assert {l.film_tradeoffs for l in smart.conditional_layers() if hasattr(l, "film_tradeoffs")} == {(0.0, 1.0)}
