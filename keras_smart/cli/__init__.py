"""The `keras-smart` command line and its runs as Python functions: train | evaluate | export | demo.

  keras-smart train --dataset=digits --backbone=digits_cnn --method=smart --epochs=10 --output_dir=runs/smart
  keras-smart evaluate --run_dir=runs/smart --attacks=fgsm,pgd20,autoattack
  keras-smart export --run_dir=runs/smart --quantize=int8
  keras-smart train --exits=pool1,pool2 --output_dir=runs/exits   # then evaluate --budget=0.6, export: staged
  keras-smart demo

The modules, in the order of a run:
  settings     `TrainSettings`: what `train` needs, checked before any work (the run's config.json).
  run_dir      the run directory's layout, the checks made before anything is written, its first write.
  runs         `train`, `evaluate`, `export`: each command as a Python function on a run directory.
  digits_demo  `demo`: the three on the embedded digits, in minutes.
  commands     absl flags, dispatch, one-line errors and exit statuses (`keras-smart --help`).

A failed start leaves nothing behind: `train` checks the settings and the
directory, loads the data and builds the model before it writes into the run
directory, and removes what it wrote if training fails (or is interrupted)
before its first epoch has ended; it never removes a directory or run it did
not create. The corrected command is then accepted.
"""

from keras_smart.cli.commands import COMMAND_HELP
from keras_smart.cli.commands import COMMANDS
from keras_smart.cli.commands import FLAGS
from keras_smart.cli.commands import USER_ERRORS
from keras_smart.cli.commands import main
from keras_smart.cli.commands import run
from keras_smart.cli.digits_demo import DEMO_ATTACK_OPTIONS
from keras_smart.cli.digits_demo import DEMO_SETTINGS
from keras_smart.cli.digits_demo import DEMO_TRADEOFFS
from keras_smart.cli.digits_demo import demo
from keras_smart.cli.run_dir import OutputDirError
from keras_smart.cli.run_dir import RunExistsError
from keras_smart.cli.runs import evaluate
from keras_smart.cli.runs import export
from keras_smart.cli.runs import load_run
from keras_smart.cli.runs import train
from keras_smart.cli.settings import MASKED_METHODS
from keras_smart.cli.settings import TrainSettings

__all__ = [
    "COMMANDS",
    "COMMAND_HELP",
    "DEMO_ATTACK_OPTIONS",
    "DEMO_SETTINGS",
    "DEMO_TRADEOFFS",
    "FLAGS",
    "MASKED_METHODS",
    "OutputDirError",
    "RunExistsError",
    "TrainSettings",
    "USER_ERRORS",
    "demo",
    "evaluate",
    "export",
    "load_run",
    "main",
    "run",
    "train",
]
