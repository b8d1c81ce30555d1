"""Mask design and non-zero accounting for SMART (two masks per kernel) and FLOATS (one mask)."""

import collections.abc
import dataclasses
import numbers

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import attacks
from keras_smart import inputs
from keras_smart import config as config_lib
from keras_smart import registry
from keras_smart.attacks import common as attacks_common
from keras_smart.layers import base
from keras_smart.layers import conditional_kernel as ck

keras = _compat.keras

def _masked_layers(model, caller):
    if not isinstance(model, keras.Model):
        raise TypeError(f"`{caller}` expects a SmartModel. Received: {type(model).__name__}")
    layers = [
        l for l in _compat.flatten_layers(model) if isinstance(l, ck.ConditionalKernel) and l.mask_kind
    ]
    if not layers:
        raise ValueError(
            f"`{caller}` needs a model converted with method='smart' or method='floats'; "
            f"model '{model.name}' has no masked layers."
        )
    names = [l.name for l in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(
            f"Masked layers must have unique names across nested models; repeated: {duplicates}."
        )
    return {l.name: l for l in layers}


def get_masks(model):
    """The model's masks: {layer name: {mask weight name: 0/1 NumPy array}}.

    Example:
      >>> masks = keras_smart.get_masks(smart)
      >>> masks["conv1"]["kernel_clean_mask"].mean()  # the clean path's density
    """
    masks = {}
    for name, layer in _masked_layers(model, "get_masks").items():
        masks[name] = {}
        for kernel_name in layer.kernel_names:
            masks[name].update(layer.kernel_masks(kernel_name))
    return masks


def set_masks(model, masks):
    """Assigns masks to a SmartModel's masked layers; checks everything before changing anything.

    Args:
      model: a SmartModel converted with method "smart" or "floats".
      masks: {layer name: {mask weight name: array of 0/1}}; mask weight names are
        "<kernel>_clean_mask" / "<kernel>_adv_mask" (smart) or "<kernel>_mask"
        (floats), e.g. "kernel_clean_mask". Layers and masks left out keep theirs.

    Raises:
      TypeError: `masks` is not a mapping of mappings.
      ValueError: unknown layer or mask name, wrong shape, or values other than 0 and 1.

    Example:
      >>> keras_smart.set_masks(smart, {"fc": {"kernel_adv_mask": np.ones((64, 10))}})
    """
    layers = _masked_layers(model, "set_masks")
    if not isinstance(masks, collections.abc.Mapping):
        raise TypeError(
            "`masks` must map layer names to {mask name: array}. "
            f"Received: {type(masks).__name__}"
        )
    checked = []
    for layer_name, layer_masks in masks.items():
        if layer_name not in layers:
            raise ValueError(
                f"No masked layer named {layer_name!r}. Masked layers: {sorted(layers)}"
            )
        if not isinstance(layer_masks, collections.abc.Mapping):
            raise TypeError(
                f"`masks[{layer_name!r}]` must map mask names to arrays. "
                f"Received: {type(layer_masks).__name__}"
            )
        layer = layers[layer_name]
        variables = {
            n: getattr(layer, n) for k in layer.kernel_names for n in layer.mask_names(k)
        }
        for mask_name, value in layer_masks.items():
            if mask_name not in variables:
                raise ValueError(
                    f"Layer {layer_name!r} has no mask {mask_name!r}. Its masks: {sorted(variables)}"
                )
            value = np.asarray(value)
            expected = tuple(variables[mask_name].shape)
            if value.shape != expected:
                raise ValueError(
                    f"Mask {layer_name!r}/{mask_name!r} must have shape {expected}. "
                    f"Received: shape {value.shape}"
                )
            if not np.isin(value, (0, 1)).all():
                raise ValueError(
                    f"Mask {layer_name!r}/{mask_name!r} must contain only 0 and 1. "
                    f"Received values such as {np.unique(value)[:5].tolist()}"
                )
            checked.append((variables[mask_name], value.astype("float32")))
    for variable, value in checked:
        variable.assign(value)


# --- design ----------------------------------------------------------------------------------------


def _keep_count(density, size):
    return max(1, int(round(density * size)))


def _top_k_mask(scores, keep, blocked=None, max_shared=None):
    """A 0/1 mask of the `keep` highest scores (stable ties).

    With `blocked` (another mask) and `max_shared`, at most `max_shared` kept
    weights may lie inside `blocked`: past that quota the next-best weights
    outside it are taken instead.
    """
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")
    if blocked is not None:
        inside = blocked.ravel()[order] > 0
        order = order[~inside | (np.cumsum(inside) <= max_shared)]
        if order.size < keep:
            raise ValueError(
                f"A mask cannot keep {keep} of {flat.size} weights sharing at most {max_shared} with the "
                f"other path's {int(blocked.sum())}: lower the densities or raise `max_overlap`."
            )
    mask = np.zeros(flat.size, np.float32)
    mask[order[:keep]] = 1.0
    return mask.reshape(scores.shape)


def _allocate_globally(kernels, scores, floors):
    """Sets each kernel's keep counts from one top-k over the scores of all kernels, per path.

    A kernel's `floors[i]` best weights are kept first, whatever their rank among the others.
    """
    for path in range(len(kernels[0].keep)):
        wanted = sum(k.keep[path] for k in kernels)
        if sum(floors) > wanted:
            raise ValueError(
                f"`min_density` asks for {sum(floors)} weights per path, more than the {wanted} the density "
                "allows: lower `min_density` or raise `density`."
            )
        ranked = []
        for kernel_scores, floor in zip(scores, floors):
            flat = np.ravel(kernel_scores[path]).astype(np.float64)
            if floor:
                flat = flat.copy()
                flat[np.argsort(-flat, kind="stable")[:floor]] = np.inf
            ranked.append(flat)
        flat = np.concatenate(ranked)
        owner = np.repeat(np.arange(len(kernels)), [k.size for k in kernels])
        kept = np.bincount(owner[np.argsort(-flat, kind="stable")[:wanted]], minlength=len(kernels))
        for kernel, count in zip(kernels, kept):
            kernel.keep[path] = max(1, int(count))


class _MaskedKernel:
    """One masked kernel: its layer, its mask variables, and the scores that rank its weights."""

    def __init__(self, layer, kernel_name, densities):
        self.layer = layer
        self.kernel_name = kernel_name
        self.mask_names = layer.mask_names(kernel_name)
        self.variables = [getattr(layer, n) for n in self.mask_names]
        self.size = int(np.prod(self.variables[0].shape))
        self.keep = [_keep_count(d, self.size) for d in densities]

    @property
    def kernel(self):
        return np.asarray(getattr(self.layer, self.kernel_name).numpy())

    def select(self, scores, max_overlap):
        """{mask name: 0/1 array} from per-mask scores, honouring the overlap constraint."""
        masks = [_top_k_mask(scores[0], self.keep[0])]
        if len(scores) == 2:
            max_shared = None if max_overlap is None else int(np.floor(max_overlap * min(self.keep)))
            blocked = None if max_overlap is None else masks[0]
            masks.append(_top_k_mask(scores[1], self.keep[1], blocked, max_shared))
        return dict(zip(self.mask_names, masks))


def _path_variables(kernels, path):
    """The mask variables path 0 (clean) or 1 (adversarial) computes with; a single mask serves both."""
    return [k.variables[min(path, len(k.variables) - 1)] for k in kernels]


class _MaskGradients:
    """dL/dm for every mask m of one path: clean loss at lam = 0, adversarial loss at lam = 1.

    At all-ones masks |dL/dm| = |W * dL/dW| is SNIP's connection sensitivity; at
    binary masks it is the straight-through gradient of learned scores. Noise is
    held at its expectation and batch-norm runs in inference mode.
    """

    def __init__(self, model, kernels, attack, loss_fn):
        self._model = model
        self._attack = attack
        self._loss_fn = loss_fn or attacks_common.default_loss
        self._variables = [
            [_compat.tf_variable(v) for v in _path_variables(kernels, path)] for path in (0, 1)
        ]
        self._function = tf.function(self._gradients, reduce_retracing=True)

    def _gradients(self, x, y, path):
        variables = self._variables[path]

        def model_fn(inputs):
            return self._model(inputs, training=False)

        with base.expected_noise(), base.tradeoff_override(float(path)):
            if path:
                x = attacks.run(self._attack, model_fn, x, y)
            with tf.GradientTape() as tape:
                tape.watch(variables)
                loss = tf.reduce_sum(tf.cast(self._loss_fn(y, model_fn(x)), tf.float32))
        return tape.gradient(loss, variables)

    def __call__(self, x, y, path):
        return [g.numpy() for g in self._function(x, y, path)]


def _default_attack(model):
    adversarial = getattr(model, "adversarial_config", None)
    return adversarial.attack if adversarial is not None else config_lib.AttackConfig()


def _snip_scores(kernels, gradients, batches):
    """Per kernel, [clean saliency, adv saliency] (one, their normalised sum, for a single mask)."""
    totals = [[np.zeros(k.variables[0].shape, np.float32) for k in kernels] for _ in (0, 1)]
    for x, y in batches:
        for path in (0, 1):
            for total, grad in zip(totals[path], gradients(x, y, path)):
                total += grad
    scores = []
    for i, kernel in enumerate(kernels):
        clean, adv = np.abs(totals[0][i]), np.abs(totals[1][i])
        if len(kernel.variables) == 1:
            scores.append([clean / max(clean.sum(), 1e-12) + adv / max(adv.sum(), 1e-12)])
        else:
            scores.append([clean, adv])
    return scores


def _learn_scores(kernels, gradients, batches, max_overlap, steps, learning_rate):
    """Per-path scores trained by Adam through the straight-through top-k mask (weights fixed).

    Scores start at |W| / max|W| (the magnitude masks); each step sets the masks
    to the top-k of the scores, takes dL/dm on a clean batch (clean masks) and
    an adversarial batch (adversarial masks), and moves the scores down it.
    """
    scores = [[np.abs(k.kernel) / max(np.abs(k.kernel).max(), 1e-12) for _ in k.variables] for k in kernels]
    moments = [[(np.zeros_like(s), np.zeros_like(s)) for s in per_kernel] for per_kernel in scores]
    beta1, beta2 = 0.9, 0.999
    for step in range(1, steps + 1):
        for kernel, kernel_scores in zip(kernels, scores):
            for variable, mask in zip(kernel.variables, kernel.select(kernel_scores, max_overlap).values()):
                variable.assign(mask)
        x, y = batches[(step - 1) % len(batches)]
        grads = [[np.zeros_like(s) for s in per_kernel] for per_kernel in scores]
        for path in (0, 1):
            for i, grad in enumerate(gradients(x, y, path)):
                grads[i][min(path, len(grads[i]) - 1)] += grad
        for per_kernel, per_moments, per_grads in zip(scores, moments, grads):
            for j, grad in enumerate(per_grads):
                m, v = per_moments[j]
                m[:] = beta1 * m + (1 - beta1) * grad
                v[:] = beta2 * v + (1 - beta2) * grad**2
                m_hat, v_hat = m / (1 - beta1**step), v / (1 - beta2**step)
                per_kernel[j] -= learning_rate * m_hat / (np.sqrt(v_hat) + 1e-8)
    return scores


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
    masks stay all ones on both paths; `density` then applies to the others.

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
      dense_layers: names of masked layers left dense on both paths.

    Returns:
      The masks set, as `get_masks` returns them.

    Raises:
      ValueError: bad score, density or overlap, a model without masked
        layers, missing or empty `data` for "snip"/"learned", or `data` given
        to a score that does not use it.

    Example:
      >>> keras_smart.design_masks(smart, score="snip", density=(0.5, 0.3), data=(x, y),
      ...                          attack=keras_smart.AttackConfig(eps=0.3, steps=5))
    """
    mask_config = config_lib.MaskConfig(score=score, density=density, seed=seed, max_overlap=max_overlap)
    layers = _masked_layers(model, "design_masks")
    if isinstance(dense_layers, str) or not all(isinstance(n, str) for n in dense_layers):
        raise TypeError(f"`dense_layers` must be a list of layer names. Received: dense_layers={dense_layers!r}")
    unknown = sorted(set(dense_layers) - set(layers))
    if unknown:
        raise ValueError(f"`dense_layers` names no masked layer: {unknown}. Masked layers: {sorted(layers)}")
    if min_density is not None:
        min_density = config_lib.check_density(min_density, "min_density")
    dense = {
        name: {n: np.ones(getattr(layers[name], n).shape, np.float32) for k in layers[name].kernel_names
               for n in layers[name].mask_names(k)}
        for name in dense_layers
    }
    layers = {name: layer for name, layer in layers.items() if name not in dense}
    if not layers:
        set_masks(model, dense)
        return get_masks(model)
    kernels = []
    for name, layer in layers.items():
        densities = mask_config.density
        if layer.mask_kind == "single":
            if densities[0] != densities[1]:
                raise ValueError(
                    f"Layer {name!r} has one mask (method='floats'), so it takes one density. "
                    f"Received: density={densities}"
                )
            densities = densities[:1]
        kernels.extend(_MaskedKernel(layer, kernel_name, densities) for kernel_name in layer.kernel_names)
    if allocation not in ("layer", "global"):
        raise ValueError(f'`allocation` must be "layer" or "global". Received: allocation={allocation!r}')
    if allocation == "global" and mask_config.score == config_lib.MaskScore.LEARNED:
        raise ValueError('score="learned" trains per-kernel top-k masks: use allocation="layer".')
    from_data = mask_config.score in (config_lib.MaskScore.SNIP, config_lib.MaskScore.LEARNED)
    if from_data != (data is not None):
        raise ValueError(
            f"score={mask_config.score.value!r} "
            + ("needs `data`: (x, y) arrays or a tf.data.Dataset." if from_data else "does not use `data`.")
        )
    for value, arg in ((batch_size, "batch_size"), (max_batches, "max_batches"), (steps, "steps")):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ValueError(f"`{arg}` must be an int >= 1. Received: {arg}={value!r}")

    if mask_config.score == config_lib.MaskScore.MAGNITUDE:
        scores = [[np.abs(k.kernel)] * len(k.variables) for k in kernels]
    elif mask_config.score == config_lib.MaskScore.RANDOM:
        rng = np.random.default_rng(mask_config.seed)
        scores = [[rng.random(k.variables[0].shape) for _ in k.variables] for k in kernels]
    else:
        batches = inputs.take_batches(data, batch_size, max_batches, "mask design from training signal")
        gradients = _MaskGradients(model, kernels, attack or _default_attack(model), loss_fn)
        previous = get_masks(model)
        try:
            if mask_config.score == config_lib.MaskScore.SNIP:
                set_masks(model, dense)
                for kernel in kernels:
                    for variable in kernel.variables:
                        variable.assign(np.ones(variable.shape, np.float32))
                scores = _snip_scores(kernels, gradients, batches)
            else:
                scores = _learn_scores(kernels, gradients, batches, mask_config.max_overlap, steps, learning_rate)
        except BaseException:
            set_masks(model, previous)
            raise
    floors = [0 if min_density is None else _keep_count(min_density, k.size) for k in kernels]
    if allocation == "global":
        _allocate_globally(kernels, scores, floors)
    else:
        for kernel, floor in zip(kernels, floors):
            kernel.keep = [max(keep, floor) for keep in kernel.keep]
    masks = dict(dense)
    for kernel, kernel_scores in zip(kernels, scores):
        masks.setdefault(kernel.layer.name, {}).update(kernel.select(kernel_scores, mask_config.max_overlap))
    set_masks(model, masks)
    return masks


# --- accounting ------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class NonzeroCount:
    """Non-zero kernel weights and multiply-accumulates of a model, per path.

    Counts cover every kernel `keras_smart.registry.kernel_names` knows (Conv1D,
    Conv2D, Conv3D, Conv2DTranspose, DepthwiseConv2D, SeparableConv2D, Dense,
    EinsumDense, also inside MultiHeadAttention), conditional or plain; biases
    and normalisation are left out, and MACs count kernel multiplications only
    (not attention's activation products).
    `union` counts weights non-zero on either path: what a file holding both
    paths stores. MACs are per example, from each layer's first call; None when a
    layer's output shape is not static.

    Attributes:
      total: kernel weights of the dense model.
      clean, adv, union: non-zero kernel weights on each path / on either.
      macs_dense, macs_clean, macs_adv: MACs of the dense model / of each path.
      conditioning: weights that exist only to condition on lam (FiLM MLPs,
        noise scales, the second batch-norm set).
      unconverted: weights of the layers left plain (the same on both paths:
        layers `convert` skipped or has no conditional version of, such as LSTM
        or Embedding, and the layers a method shares by design, such as OAT's
        convolutions). Plain kernels also count in `total`, `clean`, `adv`.
      layers: {layer name: {"total", "clean", "adv", "union", "macs_clean", ...}}.
      unconverted_layers: {layer name: weights} of the layers left plain.
    """

    total: int
    clean: int
    adv: int
    union: int
    macs_dense: int
    macs_clean: int
    macs_adv: int
    conditioning: int
    layers: dict
    unconverted: int = 0
    unconverted_layers: dict = dataclasses.field(default_factory=dict)

    def as_dict(self):
        return dataclasses.asdict(self)


def _path_kernels(layer, kernel_name):
    """(clean, adv) effective kernels of one kernel, with noise at its expectation."""
    kernel = np.asarray(getattr(layer, kernel_name).numpy())
    if not isinstance(layer, ck.ConditionalKernel) or not layer.mask_kind:
        return kernel, kernel
    masks = list(layer.kernel_masks(kernel_name).values())
    if layer.mask_kind == "single":
        return kernel * masks[0], kernel * masks[0]
    return kernel * masks[0], kernel * masks[1]


def count_nonzero(model):
    """Counts non-zero kernel weights and MACs per path and for the union of the paths.

    Args:
      model: a SmartModel (or any Keras model: both paths are then the same).

    Returns:
      A `NonzeroCount`.

    Example:
      >>> counts = keras_smart.count_nonzero(smart)
      >>> counts.clean, counts.adv, counts.union, counts.macs_adv
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"`count_nonzero` expects a keras.Model. Received: {type(model).__name__}")
    per_layer = {}
    conditioning = 0
    for layer in _compat.flatten_layers(model):
        if isinstance(layer, base.ConditionalLayer):
            conditioning += _conditioning_weights(layer)
        names = registry.kernel_names(layer)
        if not names:
            continue
        positions = registry.kernel_positions(layer)
        row = dict.fromkeys(("total", "clean", "adv", "union"), 0)
        for kernel_name in names:
            clean, adv = _path_kernels(layer, kernel_name)
            row["total"] += clean.size
            row["clean"] += int(np.count_nonzero(clean))
            row["adv"] += int(np.count_nonzero(adv))
            row["union"] += int(np.count_nonzero((clean != 0) | (adv != 0)))
        for key, count in (("macs_dense", row["total"]), ("macs_clean", row["clean"]), ("macs_adv", row["adv"])):
            row[key] = None if positions is None else positions * count
        per_layer[layer.name] = row

    unconverted = {l.name: int(l.count_params()) for l in base.plain_weight_layers(model)}

    def total(key):
        values = [row[key] for row in per_layer.values()]
        return None if any(v is None for v in values) else int(sum(values))

    return NonzeroCount(
        total=total("total"),
        clean=total("clean"),
        adv=total("adv"),
        union=total("union"),
        macs_dense=total("macs_dense"),
        macs_clean=total("macs_clean"),
        macs_adv=total("macs_adv"),
        conditioning=conditioning,
        layers=per_layer,
        unconverted=sum(unconverted.values()),
        unconverted_layers=unconverted,
    )


def _conditioning_weights(layer):
    """How many weights `layer` holds only to condition on lam (masks are counted as non-zeros)."""
    if isinstance(layer, ck.ConditionalKernel) and layer.noisy:
        names = [layer.noise_scale_name(k) for k in layer.kernel_names]
    else:
        names = [w for w in base.weights_by_name(layer) if w.startswith(("adv_", "film_kernel", "film_bias"))]
    return int(sum(np.asarray(getattr(layer, n).numpy()).size for n in names))
