"""evaluate_tradeoff() -> TradeoffReport: credible robustness across the trade-off; adapters to IBM ART.

The evaluation follows RobustBench / AutoAttack practice: a diverse attack set
(AutoAttack's APGD-CE, targeted APGD-DLR and the gradient-free Square attack),
the worst case per example, every setting and the cost in forward passes in the
report, and checks that warn when the numbers look like gradient masking.

The modules, in the order of the flow: `plan` (every setting checked before
any work), `suite` (attack names, options and costs), `forward` (the model as
the attacks see it), `sweep` (the attacks at each trade-off), `rows` (one row's
accuracies and findings), `masking` (the gradient-masking checks), `report`
(`TradeoffReport`), `evaluate` (`evaluate_tradeoff`); `exits` holds the same
steps for a multi-exit model under its exit policy (the RDI-Nets attacks and
adaptive ones that follow the policy); besides them `fingerprint`
(`model_fingerprint`) and `art` (`as_art_classifier`).
"""

from keras_smart.evaluation.art import as_art_classifier
from keras_smart.evaluation.evaluate import evaluate_tradeoff
from keras_smart.evaluation.fingerprint import model_fingerprint
from keras_smart.evaluation.masking import GRADIENT_FREE_MARGIN
from keras_smart.evaluation.masking import LARGE_EPS_MARGIN
from keras_smart.evaluation.masking import LARGE_EPS_STEPS
from keras_smart.evaluation.masking import ORDER_TOLERANCE
from keras_smart.evaluation.masking import WEAK_ATTACK_MARGIN
from keras_smart.evaluation.masking import GradientMaskingWarning
from keras_smart.evaluation.masking import masking_findings
from keras_smart.evaluation.report import TradeoffReport
from keras_smart.evaluation.suite import ATTACK_NAMES
from keras_smart.evaluation.suite import AUTOATTACK
from keras_smart.evaluation.suite import DEFAULT_ATTACK_OPTIONS
from keras_smart.evaluation.suite import DEFAULT_EOT_SAMPLES
from keras_smart.evaluation.suite import GRADIENT_ATTACKS

__all__ = [
    "ATTACK_NAMES",
    "AUTOATTACK",
    "DEFAULT_ATTACK_OPTIONS",
    "DEFAULT_EOT_SAMPLES",
    "GRADIENT_ATTACKS",
    "GRADIENT_FREE_MARGIN",
    "LARGE_EPS_MARGIN",
    "LARGE_EPS_STEPS",
    "ORDER_TOLERANCE",
    "WEAK_ATTACK_MARGIN",
    "GradientMaskingWarning",
    "TradeoffReport",
    "as_art_classifier",
    "evaluate_tradeoff",
    "masking_findings",
    "model_fingerprint",
]
