"""staged_latency(): a staged bundle's pipeline under its policy against its single-file model, timed in LiteRT."""

import json
import os
import time

import numpy as np

from keras_smart import validation
from keras_smart.export import verify
from keras_smart.export.metadata import BUNDLE_METADATA
from keras_smart.export.result import INPUT_NAME


def staged_latency(bundle_dir, x, *, tradeoff=None, warmup=5):
    """Mean latency per image of a staged bundle's stages under its policy, and of its single file.

    Runs what the app runs, one image at a time, in LiteRT's interpreter with
    its default (XNNPACK) delegate: stage 1, the entropy of its logits, the
    next stage only when the entropy is not below the stage's threshold, and
    so on (smart.json's "staged" rule); and, for comparison, the trade-off's
    single file (the final exit only). The two are timed image by image,
    interleaved, on this machine's CPU; a phone's numbers differ, their ratio
    less so.

    Args:
      bundle_dir: a staged bundle (`bundle` of a multi-exit model).
      x: float32 images [N, ...] shaped like smart.json's input (a few hundred).
      tradeoff: which trade-off's stages (None: the bundle's only one).
      warmup: images run through both before timing starts.

    Returns:
      A dict: "examples", "tradeoff", "staged_ms" and "single_ms" (mean wall
      time per image, milliseconds), "speedup" (single_ms / staged_ms),
      "exit_shares" (the share of images leaving at each exit), "expected_macs"
      (their mean cumulative MACs as a share of the last exit's) and
      "agreement" (the share of images whose staged class equals the single
      file's).

    Raises:
      FileNotFoundError: no smart.json in `bundle_dir`.
      ValueError: not a staged bundle, an unknown or ambiguous `tradeoff`,
        images of another shape.

    Example:
      >>> import os, tempfile
      >>> multi = keras_smart.exits.attach(cnn, after=["conv"])
      >>> policy = keras_smart.exits.calibrate(multi, x, shares=[0.5, 0.5])
      >>> out_dir = os.path.join(tempfile.mkdtemp(), "staged")
      >>> _ = keras_smart.export.bundle(multi, out_dir, policy=policy, check_data=x[:8])
      >>> timing = keras_smart.export.staged_latency(out_dir, x[:16], warmup=1)
      >>> timing["examples"], len(timing["exit_shares"]), timing["staged_ms"] > 0
      (16, 2, True)
    """
    pipeline, stages, single = _load(bundle_dir, tradeoff)
    x = _check_images(x, single)
    warmup = validation.check_int(warmup, "warmup", minimum=0)
    thresholds = [s["threshold"] for s in pipeline["stages"][:-1]]
    features = [s["features"] for s in pipeline["stages"]]
    for image in x[:warmup]:
        _run_staged(stages, features, thresholds, image[None])
        single(**{INPUT_NAME: image[None]})
    staged_time = single_time = 0.0
    exit_ids, agree = [], 0
    for image in x:
        start = time.perf_counter()
        exit_id, logits = _run_staged(stages, features, thresholds, image[None])
        middle = time.perf_counter()
        (single_logits,) = single(**{INPUT_NAME: image[None]}).values()
        single_time += time.perf_counter() - middle
        staged_time += middle - start
        exit_ids.append(exit_id)
        agree += int(np.argmax(logits) == np.argmax(single_logits))
    shares = np.bincount(exit_ids, minlength=len(stages)) / len(x)
    macs = np.array([s["cumulative_macs"] for s in pipeline["stages"]], np.float64)
    return {
        "examples": len(x),
        "tradeoff": pipeline["tradeoff"],
        "staged_ms": 1e3 * staged_time / len(x),
        "single_ms": 1e3 * single_time / len(x),
        "speedup": single_time / staged_time,
        "exit_shares": shares.tolist(),
        "expected_macs": float(np.dot(shares, macs) / macs[-1]),
        "agreement": agree / len(x),
    }


def _run_staged(stages, features, thresholds, image):
    """(exit index, its logits) of one image through the stages, as the app runs them."""
    feeds = {INPUT_NAME: image}
    for k, runner in enumerate(stages):
        outputs = runner(**feeds)
        logits = outputs["output"]
        if k == len(thresholds) or _entropy(logits[0]) < thresholds[k]:
            return k, logits
        feeds = {name: outputs[name] for name in features[k]}
    raise AssertionError("unreachable: the last stage always exits")


def _entropy(logits):
    """The entropy (natural log) of softmax(`logits`), as keras_smart.exits.entropy computes it."""
    z = logits.astype(np.float64) - np.max(logits)
    log_p = z - np.log(np.sum(np.exp(z)))
    return float(-np.sum(np.exp(log_p) * log_p))


def _load(bundle_dir, tradeoff):
    """(the trade-off's pipeline entry, a signature runner per stage, the single file's runner)."""
    path = os.path.join(os.fspath(bundle_dir), BUNDLE_METADATA)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist: `bundle_dir` must be a directory `bundle` wrote.")
    with open(path, encoding="utf-8") as f:
        contents = json.load(f)
    if "staged" not in contents:
        raise ValueError(
            f"{bundle_dir} is not a staged bundle (smart.json has no 'staged' section): export a multi-exit "
            "model with keras_smart.export.bundle(model, out_dir, policy=...)."
        )
    pipelines = contents["staged"]["pipelines"]
    offered = [p["tradeoff"] for p in pipelines]
    if tradeoff is None and len(pipelines) == 1:
        pipeline = pipelines[0]
    else:
        found = [p for p in pipelines if tradeoff is not None and p["tradeoff"] is not None
                 and abs(p["tradeoff"] - validation.check_tradeoff(tradeoff)) < 1e-6]
        if not found:
            raise ValueError(f"Pass the `tradeoff` of one of the bundle's pipelines: {offered}. Received: {tradeoff!r}")
        pipeline = found[0]

    def runner(name):
        return _Runner(os.path.join(os.fspath(bundle_dir), name))

    return pipeline, [runner(s["file"]) for s in pipeline["stages"]], runner(pipeline["single_file"])


class _Runner:
    """A file's serving signature, called one image at a time with as little Python around `invoke` as possible."""

    def __init__(self, path):
        self.interpreter = verify.interpreter(path)
        signature = self.interpreter.get_signature_runner("serving_default")
        self.input_details = signature.get_input_details()
        self.inputs = {name: d["index"] for name, d in self.input_details.items()}
        self.outputs = {name: d["index"] for name, d in signature.get_output_details().items()}
        del signature  # it holds views of the interpreter's tensors, which resizing refuses
        for name, index in self.inputs.items():  # batch 1
            shape = [1 if s < 0 else int(s) for s in self.input_details[name]["shape_signature"]]
            self.interpreter.resize_tensor_input(index, shape)
        self.interpreter.allocate_tensors()

    def __call__(self, **feeds):
        for name, value in feeds.items():
            self.interpreter.set_tensor(self.inputs[name], value)
        self.interpreter.invoke()
        return {name: self.interpreter.get_tensor(index) for name, index in self.outputs.items()}


def _check_images(x, single):
    x = np.asarray(x, np.float32)
    shape = [int(s) for s in single.input_details[INPUT_NAME]["shape_signature"]][1:]
    if x.ndim != len(shape) + 1 or list(x.shape[1:]) != shape or not len(x):
        raise ValueError(f"`x` must be images [N, {', '.join(map(str, shape))}] with N >= 1. Received shape {x.shape}")
    return x
