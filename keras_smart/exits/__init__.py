"""RDI-Nets multi-exit networks: attach exit heads, count their staged cost, route inputs by entropy.

The modules, in the order of the flow: `attach` (`attach`: heads on inner
features, built by `heads`), `structure` (`exit_points`, `is_multi_exit`:
reading a multi-exit model back), `costs` (`exit_macs`: the staged
multiply-accumulates up to each exit), `routing` (`entropy`,
`first_confident`: which exit each input leaves at), `policy` (`ExitPolicy`)
and `calibration` (`calibrate`: entropy thresholds for a share of the
inputs per exit, or for a MAC budget).
"""

from keras_smart.exits.attach import attach
from keras_smart.exits.calibration import calibrate
from keras_smart.exits.costs import exit_macs
from keras_smart.exits.policy import ExitPolicy
from keras_smart.exits.routing import entropy
from keras_smart.exits.routing import first_confident
from keras_smart.exits.structure import exit_points
from keras_smart.exits.structure import is_multi_exit

__all__ = [
    "ExitPolicy",
    "attach",
    "calibrate",
    "entropy",
    "exit_macs",
    "exit_points",
    "first_confident",
    "is_multi_exit",
]
