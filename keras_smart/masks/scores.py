"""The scores that rank each kernel's weights for a mask: magnitude, random, SNIP and learned.

Every scorer returns, per masked kernel, one score array per mask (two for
SMART's dual masks, one for FLOATS' shared mask), each the kernel's shape;
`allocation` keeps the highest-scoring weights.
"""

import numpy as np
import tensorflow as tf

from keras_smart import multi_exit_training
from keras_smart.attacks import common as attacks_common
from keras_smart.layers import base
from keras_smart.layers import compact_masks

_ADAM_BETA1, _ADAM_BETA2, _ADAM_EPSILON = 0.9, 0.999, 1e-8


def magnitude_scores(kernels):
    """|W| for every mask of every kernel (at equal densities both SMART paths get the same mask)."""
    return [[np.abs(k.kernel)] * len(k.mask_names) for k in kernels]


def random_scores(kernels, seed):
    """Uniform draws from `seed`, independent per kernel and per mask."""
    rng = np.random.default_rng(seed)
    return [[rng.random(k.shape) for _ in k.mask_names] for k in kernels]


def _path_masks(kernels, path):
    """[(layer, mask name)] path 0 (clean) or 1 (adversarial) computes with; a single mask serves both."""
    return [(k.layer, k.mask_names[min(path, len(k.mask_names) - 1)]) for k in kernels]


class MaskGradients:
    """dL/dm for every mask m of one path: clean loss at lam = 0, adversarial loss at lam = 1.

    At all-ones masks |dL/dm| = |W * dL/dW| is SNIP's connection sensitivity; at
    binary masks it is the straight-through gradient of learned scores. Noise is
    held at its expectation and batch-norm runs in inference mode. A multi-exit
    model's loss is the sum over its exits, and its adversarial batches come from
    the max-average attack (the training default).
    """

    def __init__(self, model, kernels, attack, loss_fn):
        self._model = model
        self._attack = attack
        self._loss_fn = loss_fn or attacks_common.default_loss
        self._masks = [_path_masks(kernels, path) for path in (0, 1)]
        self._exits = multi_exit_training.output_count(model)
        self._function = tf.function(self._gradients, reduce_retracing=True)

    def _gradients(self, x, y, path):
        # The stored masks are bits: the tape watches float copies that the layers compute with instead.
        masks = [layer.mask_tensor(name, tf.float32) for layer, name in self._masks[path]]
        substitutes = compact_masks.substituted_masks(dict(zip(self._masks[path], masks)))

        def model_fn(inputs):
            return self._model(inputs, training=False)

        with base.expected_noise(), base.tradeoff_override(float(path)):
            if path:
                x = multi_exit_training.run_attack(
                    self._attack, model_fn, x, y, exits=self._exits, exit_attack="max_average", exit_index=-1
                )
            with tf.GradientTape() as tape, substitutes:
                tape.watch(masks)
                outputs = tf.nest.flatten(model_fn(x))
                loss = tf.add_n([tf.reduce_sum(tf.cast(self._loss_fn(y, logits), tf.float32)) for logits in outputs])
        return tape.gradient(loss, masks)

    def __call__(self, x, y, path):
        return [g.numpy() for g in self._function(x, y, path)]


def snip_scores(kernels, gradients, batches):
    """Per kernel, [clean saliency, adv saliency] (one, their normalised sum, for a single mask).

    The saliencies are |dL/dm| summed over `batches`, so every mask must be all
    ones while they are taken (the caller's to arrange).
    """
    totals = [[np.zeros(k.shape, np.float32) for k in kernels] for _ in (0, 1)]
    for x, y in batches:
        for path in (0, 1):
            for total, grad in zip(totals[path], gradients(x, y, path)):
                total += grad
    scores = []
    for i, kernel in enumerate(kernels):
        clean, adv = np.abs(totals[0][i]), np.abs(totals[1][i])
        if len(kernel.mask_names) == 1:
            scores.append([clean / max(clean.sum(), 1e-12) + adv / max(adv.sum(), 1e-12)])
        else:
            scores.append([clean, adv])
    return scores


def learned_scores(kernels, gradients, batches, max_overlap, steps, learning_rate):
    """Per-path scores trained by Adam through the straight-through top-k mask (weights fixed).

    Scores start at |W| / max|W| (the magnitude masks); each step sets the masks
    to the top-k of the scores, takes dL/dm on a clean batch (clean masks) and
    an adversarial batch (adversarial masks), and moves the scores down it.
    The masks are left at the last step's top-k.
    """
    scores = [[np.abs(k.kernel) / max(np.abs(k.kernel).max(), 1e-12) for _ in k.mask_names] for k in kernels]
    moments = [[(np.zeros_like(s), np.zeros_like(s)) for s in per_kernel] for per_kernel in scores]
    for step in range(1, steps + 1):
        for kernel, kernel_scores in zip(kernels, scores):
            kernel.assign(kernel.select(kernel_scores, max_overlap))
        x, y = batches[(step - 1) % len(batches)]
        grads = _score_gradients(scores, gradients(x, y, 0), gradients(x, y, 1))
        for per_kernel, per_moments, per_grads in zip(scores, moments, grads):
            for j, grad in enumerate(per_grads):
                _adam_step(per_kernel[j], per_moments[j], grad, step, learning_rate)
    return scores


def _score_gradients(scores, clean, adv):
    """Per kernel and mask, the gradient of its scores: a single (FLOATS) mask takes both paths' sum."""
    grads = [[np.zeros_like(s) for s in per_kernel] for per_kernel in scores]
    for path, path_grads in enumerate((clean, adv)):
        for i, grad in enumerate(path_grads):
            grads[i][min(path, len(grads[i]) - 1)] += grad
    return grads


def _adam_step(scores, moments, grad, step, learning_rate):
    """One Adam step (bias-corrected, step counted from 1) on `scores`, in place."""
    m, v = moments
    m[:] = _ADAM_BETA1 * m + (1 - _ADAM_BETA1) * grad
    v[:] = _ADAM_BETA2 * v + (1 - _ADAM_BETA2) * grad**2
    m_hat, v_hat = m / (1 - _ADAM_BETA1**step), v / (1 - _ADAM_BETA2**step)
    scores -= learning_rate * m_hat / (np.sqrt(v_hat) + _ADAM_EPSILON)
