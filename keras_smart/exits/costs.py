"""exit_macs(): what running a multi-exit model up to each exit costs, in staged multiply-accumulates."""

from keras_smart import _compat
from keras_smart import training
from keras_smart import validation
from keras_smart.exits import structure
from keras_smart.masks import counting

keras = _compat.keras


def exit_macs(model, *, tradeoff=None):
    """Cumulative multiply-accumulates per example of running a multi-exit model up to each exit.

    Staged execution: to leave at exit k, the model computes the trunk layers
    that exit 1..k's layers depend on (each once) and the heads 1..k (the
    earlier exits were evaluated and passed on); the final exit computes every
    layer of the model. Per layer, the MACs are those of
    `keras_smart.count_nonzero`: non-zero kernel weights of Conv / Dense /
    EinsumDense / MultiHeadAttention projections (nested models opened) times
    the positions each is applied at, on the path the trade-off selects (clean
    at 0, adversarial above 0; a dual-mask layer in "blend" mode computes with
    the union of its masks strictly between 0 and 1). Biases, normalisation,
    activations, pooling and attention's activation products are not counted.

    Args:
      model: a multi-exit model (see `attach`), plain or SmartModel.
      tradeoff: the trade-off to count at (SmartModel only); None: the model's current one.

    Returns:
      A tuple of ints, one per output: side exits earliest first, then the final
      output (the whole model's MACs), non-decreasing.

    Raises:
      ValueError: not a multi-exit model, or a layer whose output shape is not static.

    Example:
      >>> multi = keras_smart.exits.attach(cnn, after=["conv"])
      >>> keras_smart.exits.exit_macs(multi)  # conv; + the head's conv 3x3x8x16 at 13x13 (stride 2) and dense 4x4x16x10; + logits
      (245920, 246000)
    """
    points = structure.exit_points(model)
    lam = _tradeoff(model, tradeoff)
    costs = _layer_macs(model, lam)
    graph = structure.layer_graph(structure.graph_config(model))
    done, total, staged = set(), 0, []
    for head, after in points:
        needed = (_ancestors(graph, after) | {head}) - done
        total += sum(costs[name] for name in needed)
        done |= needed
        staged.append(total)
    staged.append(sum(costs.values()))
    return tuple(staged)


def _tradeoff(model, tradeoff):
    if not isinstance(model, training.SmartModel):
        return 0.0  # plain layers compute the same on every path
    if tradeoff is None:
        return float(model.tradeoff_variable.numpy())
    return validation.check_tradeoff(tradeoff)


def _layer_macs(model, lam):
    """{top-level layer name: its MACs at `lam`, sublayers and nested models included}."""
    rows = counting.count_nonzero(model).layers
    costs = {}
    for layer in model.layers:
        parts = [layer, *_compat.flatten_layers(layer)]
        costs[layer.name] = sum(_path_macs(part, rows[part.name], lam) for part in parts if part.name in rows)
    return costs


def _path_macs(layer, row, lam):
    """The MACs `layer` computes with at trade-off `lam`, from its `count_nonzero` row."""
    if row["macs_dense"] is None:
        raise ValueError(
            f"Layer '{layer.name}' has no static output shape, so its MACs per example are unknown. Build the "
            "model with fixed input sizes (keras.Input(shape=(H, W, C)))."
        )
    if lam == 0.0:
        return row["macs_clean"]
    if lam < 1.0 and getattr(layer, "tradeoff_mode", None) == "blend" and row["total"]:
        return row["macs_dense"] // row["total"] * row["union"]  # blended masks: the union's weights
    return row["macs_adv"]


def _ancestors(graph, name):
    """`name` and every layer it depends on in `graph` ({name: input layer names})."""
    seen, stack = set(), [name]
    while stack:
        current = stack.pop()
        if current not in seen:
            seen.add(current)
            stack.extend(graph.get(current, ()))
    return seen
