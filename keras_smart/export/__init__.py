"""to_tflite() and bundle(): LiteRT files that run on Android's default runtime, checked before they are kept.

A file is written next to its destination under a temporary name, loaded in
LiteRT's interpreter (`ai_edge_litert`, default XNNPACK delegate) and compared
with the Keras model on sample inputs; only a file that passes is renamed into
place. Anything else (a conversion that would need Flex / select-TF ops, an
interpreter that cannot prepare the file, a parity check that fails) raises
and leaves no file behind.

Trade-off, two ways:
- baked (`tradeoff=t`): `keras_smart.strip(model, t)` folds masks, noise
  (at its expectation), FiLM and the chosen batch-norm set into plain layers;
  the smallest and fastest file, one per trade-off.
- runtime (`runtime_tradeoff=True`): the trade-off is a second input
  ("tradeoff", float32 of shape [1]); the file keeps each path's constant
  kernels (SMART: two per layer, see `keras_smart.layers.base.separate_paths`)
  and routes batch-norm and FiLM by the trade-off, so one file serves every
  trade-off. With independent masks that is about 2x a baked file. Storing W
  once with bool masks and computing the path's kernel at run time stores
  1.5x but runs about 3.5x slower in LiteRT (XNNPACK prepacks only constant
  weights), so the file keeps constant kernels
  (benchmarks/runtime_tradeoff_size.py measures both).

A multi-exit model (`keras_smart.exits.attach`) with its exit policy gives a
staged bundle: one file per stage, run one after the other on the phone until
an exit is confident; `staged_latency` times that pipeline against the
single-file model.

The steps, one module each: `options` (the settings, checked first),
`conversion` (Keras to `.tflite` bytes), `verify` (the LiteRT check), `files`
(all-or-nothing writes), `tflite` (`to_tflite`), `metadata` (`smart.json`),
`android` (`bundle`), `stages` (a multi-exit model cut into stage models),
`staged` (the staged bundle's files and their chained check) and `latency`
(`staged_latency`).
"""

from keras_smart.export.android import bundle
from keras_smart.export.latency import staged_latency
from keras_smart.export.metadata import BUNDLE_LABELS
from keras_smart.export.metadata import BUNDLE_METADATA
from keras_smart.export.options import QUANTIZE_CHOICES
from keras_smart.export.result import INPUT_NAME
from keras_smart.export.result import OUTPUT_NAME
from keras_smart.export.result import TRADEOFF_NAME
from keras_smart.export.result import ExportError
from keras_smart.export.result import ExportResult
from keras_smart.export.tflite import to_tflite

__all__ = [
    "BUNDLE_LABELS",
    "BUNDLE_METADATA",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "QUANTIZE_CHOICES",
    "TRADEOFF_NAME",
    "ExportError",
    "ExportResult",
    "bundle",
    "staged_latency",
    "to_tflite",
]
