"""A multi-exit model cut into stages: stage k runs the trunk from cut k-1 to cut k, then exit k's head.

The cuts are the outputs of the layers the exits hang on
(`keras_smart.exits.exit_points`). Stage 1 takes the image; stage k > 1 takes
every tensor of the earlier stages that the rest of the model still needs: the
previous cut, and also any tensor a residual connection carries past the cut
(found in the layer graph). Each stage gives exit k's logits first, then those
tensors (the last stage gives the final logits only).
"""

import dataclasses

import tensorflow as tf

from keras_smart import _compat
from keras_smart.export.result import INPUT_NAME
from keras_smart.export.result import OUTPUT_NAME

keras = _compat.keras

FEATURE_PREFIX = "feature_"  # a stage's inputs and outputs other than the image and the logits


@dataclasses.dataclass(frozen=True)
class Stage:
    """One stage of a multi-exit model, as a plain Keras model.

    Attributes:
      index: the stage's number, from 1; exit `index` leaves from it.
      model: a Functional model over the plain model's layers, mapping its
        inputs (a list, in `input_names` order) to [logits, *features].
      input_names: the names of its inputs in the LiteRT signature ("input" for
        the image, "feature_<layer name>" for a tensor an earlier stage computed).
      output_names: "output" (the exit's logits), then the feature names the
        next stage takes as its `input_names`.
      layers: the names of the top-level layers (and exit heads) it runs, in graph order.
    """

    index: int
    model: object
    input_names: tuple
    output_names: tuple
    layers: tuple

    @property
    def feature_names(self):
        """The names of the tensors this stage hands to the next one."""
        return self.output_names[1:]


def split(model, points):
    """The stages of a plain multi-exit model, earliest first (one more than `points`).

    Args:
      model: a plain (stripped) Functional multi-exit model with one input; its
        outputs are the exits' logits, earliest first, then the final logits.
      points: its `keras_smart.exits.exit_points`: [(head name, after-layer name)].

    Returns:
      A list of `Stage`s. Building them adds calls to `model`'s layers: pass a
      model of your own (a clone or a `strip` result), not the user's.

    Raises:
      ValueError: a model with several inputs, a layer called more than once
        among the exits' layers, or a tensor crossing a cut that is not float32.
    """
    graph = _Graph(model)
    inputs, input_names = list(model.inputs), (INPUT_NAME,)
    if len(inputs) != 1:
        raise ValueError(f"A staged export needs a model with one input; '{model.name}' has {len(inputs)}.")
    reached, stages = set(graph.sources), []
    for index, (head, after) in enumerate(points, start=1):
        now = graph.ancestors([graph.row(head), graph.row(after)]) | reached
        crossing = graph.crossing(now)
        names = tuple(graph.name(t) for t in crossing)
        stages.append((index, inputs, input_names, [model.outputs[index - 1], *crossing], names, now - reached))
        reached, inputs, input_names = now, crossing, names
    rest = set(range(len(graph.rows))) - reached
    stages.append((len(points) + 1, inputs, input_names, [model.outputs[-1]], (), rest))
    return [_stage(model, graph, *args) for args in stages]


def _stage(model, graph, index, inputs, input_names, outputs, feature_names, rows):
    stage_model = keras.Model(inputs, outputs, name=f"{model.name}_stage{index}")
    layers = tuple(graph.rows[i][0].name for i in sorted(rows) if graph.rows[i][1])
    return Stage(index, stage_model, tuple(input_names), (OUTPUT_NAME, *feature_names), layers)


class _Graph:
    """The top-level calls of a Functional model and how its tensors connect them."""

    def __init__(self, model):
        self.model = model
        self.rows = _compat.graph_nodes(model)
        self.producer = {id(t): (i, j) for i, (_, _, outs) in enumerate(self.rows) for j, t in enumerate(outs)}
        self.sources = [i for i, (_, ins, _) in enumerate(self.rows) if not ins]

    def row(self, layer_name):
        """The index of the one call of top-level layer `layer_name` (repeats on the same inputs count once)."""
        found = [i for i, (layer, _, _) in enumerate(self.rows) if layer.name == layer_name]
        calls = {tuple(id(t) for t in self.rows[i][1]) for i in found}
        if len(calls) != 1:
            raise ValueError(
                f"Layer '{layer_name}' is called on {len(calls)} different inputs in model '{self.model.name}'; a "
                "stage boundary needs a layer called once."
            )
        return found[0]

    def ancestors(self, rows):
        """The calls `rows` depend on, themselves included."""
        seen, todo = set(), list(rows)
        while todo:
            i = todo.pop()
            if i not in seen:
                seen.add(i)
                todo.extend(self.producer[id(t)][0] for t in self.rows[i][1])
        return seen

    def crossing(self, reached):
        """The tensors made by calls in `reached` that a call outside it takes, in graph order."""
        found = {}
        for i, (_, ins, _) in enumerate(self.rows):
            if i not in reached:
                for t in ins:
                    if self.producer[id(t)][0] in reached:
                        found[self.producer[id(t)]] = t
        tensors = [found[key] for key in sorted(found)]
        for t in tensors:
            if tf.as_dtype(t.dtype) != tf.float32:
                raise ValueError(
                    f"Tensor '{self.name(t)}' ({tf.as_dtype(t.dtype).name}) crosses a stage boundary of model "
                    f"'{self.model.name}', and stages hand on float32 tensors only. Move the exit so that no "
                    "such tensor is needed after it."
                )
        return tensors

    def name(self, tensor):
        """The signature name of a tensor handed from one stage to the next."""
        i, j = self.producer[id(tensor)]
        layer, ins, outs = self.rows[i]
        if not ins:
            return INPUT_NAME
        return f"{FEATURE_PREFIX}{layer.name}" + (f"_{j}" if len(outs) > 1 else "")
