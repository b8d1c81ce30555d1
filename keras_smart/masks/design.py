"""`design_masks`: score every masked kernel's weights, allocate the keep counts, set the top-k masks."""

import numpy as np

from keras_smart import config as config_lib
from keras_smart import inputs
from keras_smart import registry
from keras_smart import validation
from keras_smart.masks import access
from keras_smart.masks import allocation as allocation_lib
from keras_smart.masks import channel_selection
from keras_smart.masks import scores as scores_lib

_FROM_DATA = (config_lib.MaskScore.SNIP, config_lib.MaskScore.LEARNED)


def design_masks(
    model,
    *,
    score="magnitude",
    density=(0.5, 0.5),
    seed=0,
    max_overlap=None,
    data=None,
    attack=None,
    loss_fn=None,
    batch_size=128,
    max_batches=8,
    steps=100,
    learning_rate=0.01,
    allocation="layer",
    min_density=None,
    dense_layers=(),
    granularity="weight",
):
    """Designs and sets masks for every masked kernel at the given densities.

    Each kernel keeps its top `round(density * size)` weights by score:
    - "magnitude": |W| (at equal densities both SMART paths get the same mask);
    - "random": uniform draws, independent per path, from `seed`;
    - "snip": |W * dL/dW| of the dense model (all masks at one while scoring)
      summed over `data`: the clean loss at lam = 0 for the clean mask, the
      loss on adversarial examples (`attack`, through the adversarial path at
      lam = 1) for the adversarial mask; a single (FLOATS) mask takes the sum
      of both, each normalised to total one;
    - "learned": per-path scores, initialised to |W| / max|W| and trained for
      `steps` Adam steps (weights fixed) through the top-k mask with a
      straight-through estimator, clean mask on clean batches, adversarial
      mask on adversarial ones. Costs about `steps` adversarial training steps.
    Scoring holds weight noise at its expectation and runs batch-norm in
    inference mode. FLOATS designs its one-shot mask with the same scores.

    `allocation="layer"` gives every kernel the same density; `"global"` ranks
    the scores of all kernels together (SNIP's own rule), so each path keeps
    `density` of all masked weights, and a kernel whose weights score higher
    (often a small convolution beside a large dense layer) keeps more of them;
    every kernel keeps at least one weight per path.

    `min_density` sets a floor: every kernel keeps at least that share of its
    weights on each path (with "global" allocation the floors come out of the
    same budget). `dense_layers` names layers (e.g. the classifier) whose
    masks stay all ones on both paths (also while "snip" and "learned" score
    the others); `density` then applies to the others.

    `granularity="channel"` keeps or drops whole output channels per path
    (what a compacting export can remove): the weights are scored as above,
    then each channel group of `keras_smart.channel_plan(model)` (a kernel and
    the depthwise convolutions that follow its channels) sums its scores per
    channel (each member's sums over that member's total, added up, so a small
    depthwise kernel counts as much as its wide producer) and keeps
    `round(density * channels)` channels on each path (at least one;
    `min_density` and `max_overlap` count channels). Layers whose channels
    cannot be dropped (they feed a residual addition, a concatenation or the
    model's output, ...) keep all-ones masks on both paths; a warning lists
    them with the reason.

    Args:
      model: a SmartModel converted with method "smart" or "floats".
      score: "magnitude", "random", "snip" or "learned".
      density: the share of weights kept: one number, or (d_clean, d_adv) for
        smart. FLOATS has one mask, so its two densities must be equal.
      seed: int seed for "random".
      max_overlap: None, or the largest share in [0, 1] of the smaller SMART
        mask that both masks may keep; the adversarial mask gives way.
      data: for "snip" and "learned": (x, y) arrays or a tf.data.Dataset of
        (x, y) batches (integer or one-hot labels).
      attack: the `AttackConfig` of the adversarial loss; default: the model's
        adversarial training attack if enabled, else `AttackConfig()`.
      loss_fn: per-example loss `(labels, outputs) -> [batch]`; default:
        cross-entropy from logits.
      batch_size, max_batches: how arrays are batched and how many batches
        are used ("learned" cycles through them).
      steps, learning_rate: the score training of "learned".
      allocation: "layer" (the density per kernel) or "global" (the density
        over all masked kernels together; not with "learned", whose top-k is
        per kernel while it trains).
      min_density: None, or the share in (0, 1] of each kernel's weights that
        each path keeps at least.
      dense_layers: names of masked layers left dense on both paths (with
        "channel", their channel group stays dense too).
      granularity: "weight" (each weight kept or dropped) or "channel" (whole
        output channels; only with allocation="layer").

    Returns:
      The masks set, as `get_masks` returns them.

    Raises:
      TypeError: a setting of the wrong type (e.g. `dense_layers` not a list of
        names, a non-int `steps`).
      ValueError: bad score, density, overlap or granularity, a model without
        masked layers, missing or empty `data` for "snip"/"learned", `data`
        given to a score that does not use it, or "channel" granularity with
        "global" allocation or on a model that is not Functional.

    Example:
      >>> masks = keras_smart.design_masks(smart, density=0.5)
      >>> sorted(masks)
      ['conv', 'logits']
      >>> int(masks["conv"]["kernel_clean_mask"].sum()), masks["conv"]["kernel_clean_mask"].size
      (36, 72)
      >>> masks = keras_smart.design_masks(smart, score="snip", density=(0.5, 0.3), data=(x[:16], y[:16]),
      ...                                  attack=keras_smart.AttackConfig(kind="fgsm", eps=0.1))
      >>> int(masks["conv"]["kernel_clean_mask"].sum()), int(masks["conv"]["kernel_adv_mask"].sum())
      (36, 22)
    """
    mask_config = config_lib.MaskConfig(score=score, density=density, seed=seed, max_overlap=max_overlap)
    _check_granularity(granularity)
    layers = access.masked_layers(model, "design_masks")
    dense = _dense_masks(layers, dense_layers)
    if min_density is not None:
        min_density = validation.check_density(min_density, "min_density")
    channels = None
    if granularity == "channel":
        channel_selection.check_allocation(allocation)
        channels = channel_selection.ChannelDesign(
            model, layers, dense, lambda layer: _layer_densities(layer, mask_config.density)
        )
        kernels = channels.kernels
    else:
        kernels = _masked_kernels(layers, dense, mask_config.density)
    _check_design_settings(
        mask_config, allocation, data,
        batch_size=batch_size, max_batches=max_batches, steps=steps, learning_rate=learning_rate,
    )
    if channels is not None:
        channels.warn_pinned()
    if not kernels:
        access.set_masks(model, channels.masks([], None, None) if channels is not None else dense)
        return access.get_masks(model)
    scores = _score_kernels(
        model, layers, kernels, mask_config,
        data=data, attack=attack, loss_fn=loss_fn, batch_size=batch_size, max_batches=max_batches, steps=steps,
        learning_rate=learning_rate,
    )
    if channels is not None:
        masks = channels.masks(scores, min_density, mask_config.max_overlap)
    else:
        allocation_lib.allocate(kernels, scores, allocation, min_density)
        masks = dict(dense)
        for kernel, kernel_scores in zip(kernels, scores):
            masks.setdefault(kernel.layer.name, {}).update(kernel.select(kernel_scores, mask_config.max_overlap))
    access.set_masks(model, masks)
    return masks


def _check_granularity(granularity):
    if granularity not in ("weight", "channel"):
        raise ValueError(f'`granularity` must be "weight" or "channel". Received: granularity={granularity!r}')


def _dense_masks(layers, dense_layers):
    """{layer name: {mask name: all ones}} for the masked layers `dense_layers` names."""
    if isinstance(dense_layers, str) or not all(isinstance(n, str) for n in dense_layers):
        raise TypeError(f"`dense_layers` must be a list of layer names. Received: dense_layers={dense_layers!r}")
    unknown = sorted(set(dense_layers) - set(layers))
    if unknown:
        raise ValueError(f"`dense_layers` names no masked layer: {unknown}. Masked layers: {sorted(layers)}")
    return {
        name: {n: np.ones(shape, np.float32) for n, shape in access.mask_shapes(layers[name]).items()}
        for name in dense_layers
    }


def _masked_kernels(layers, dense, density):
    """A `MaskedKernel` for each kernel of the layers not left dense, with its per-path densities."""
    kernels = []
    for name, layer in layers.items():
        if name in dense:
            continue
        densities = _layer_densities(layer, density)
        kernels.extend(
            allocation_lib.MaskedKernel(layer, kernel_name, densities) for kernel_name in registry.kernel_names(layer)
        )
    return kernels


def _layer_densities(layer, density):
    """The densities of a layer's masks: (d_clean, d_adv), or (d,) for a single (FLOATS) mask."""
    if layer.mask_kind == "single":
        if density[0] != density[1]:
            raise ValueError(
                f"Layer {layer.name!r} has one mask (method='floats'), so it takes one density. "
                f"Received: density={density}"
            )
        return density[:1]
    return density


def _check_design_settings(mask_config, allocation, data, *, batch_size, max_batches, steps, learning_rate):
    """Raises for an allocation, `data` or training setting that does not fit the score."""
    allocation_lib.check_allocation(allocation)
    if allocation == "global" and mask_config.score == config_lib.MaskScore.LEARNED:
        raise ValueError('score="learned" trains per-kernel top-k masks: use allocation="layer".')
    from_data = mask_config.score in _FROM_DATA
    if from_data != (data is not None):
        raise ValueError(
            f"score={mask_config.score.value!r} "
            + ("needs `data`: (x, y) arrays or a tf.data.Dataset." if from_data else "does not use `data`.")
        )
    for value, name in ((batch_size, "batch_size"), (max_batches, "max_batches"), (steps, "steps")):
        validation.check_int(value, name, minimum=1)
    validation.check_positive(learning_rate, "learning_rate")


def _score_kernels(model, layers, kernels, mask_config, *, data, attack, loss_fn, batch_size, max_batches, steps,
                   learning_rate):
    """Per kernel, one score array per mask, by `mask_config.score`.

    "snip" and "learned" score through the model's masks: every mask is set to
    ones first (the layers left dense stay so); if scoring fails, the masks
    the model had are put back.
    """
    if mask_config.score == config_lib.MaskScore.MAGNITUDE:
        return scores_lib.magnitude_scores(kernels)
    if mask_config.score == config_lib.MaskScore.RANDOM:
        return scores_lib.random_scores(kernels, mask_config.seed)
    batches = inputs.take_batches(data, batch_size, max_batches, "mask design from training signal")
    gradients = scores_lib.MaskGradients(model, kernels, attack or _default_attack(model), loss_fn)
    previous = access.get_masks(model)
    try:
        _set_all_ones(layers)
        if mask_config.score == config_lib.MaskScore.SNIP:
            return scores_lib.snip_scores(kernels, gradients, batches)
        return scores_lib.learned_scores(kernels, gradients, batches, mask_config.max_overlap, steps, learning_rate)
    except BaseException:
        access.set_masks(model, previous)
        raise


def _set_all_ones(layers):
    for layer in layers.values():
        for name, shape in access.mask_shapes(layer).items():
            layer.assign_mask(name, np.ones(shape, np.float32))


def _default_attack(model):
    """The model's adversarial training attack if it has one enabled, else `AttackConfig()`."""
    adversarial = getattr(model, "adversarial_config", None)
    return adversarial.attack if adversarial is not None else config_lib.AttackConfig()
