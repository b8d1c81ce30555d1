"""calibrate(): entropy thresholds from held-out clean data, for shares of the inputs per exit or a MAC budget."""

import math

import numpy as np

from keras_smart import training
from keras_smart import validation
from keras_smart.exits import costs
from keras_smart.exits import policy as policy_lib
from keras_smart.exits import structure

# Bisection steps on the exit rate: 2**-60 is far below any one-example change of the counts.
_BISECTION_STEPS = 60


def calibrate(model, data, budget=None, shares=None, batch_size=256):
    """An `ExitPolicy` whose entropy thresholds meet `shares` or `budget` on `data` (RDI-Nets).

    Runs the model at its current trade-off (recorded in the policy), in
    inference mode, with weight noise at its expectation (what `strip` and
    export compute), and sorts each side exit's softmax entropies.

    With `shares`: sequential quantiles. Exit k takes, among the inputs that
    no earlier exit took, those with the lowest entropy at exit k, so that
    round(N * (shares[0] + ... + shares[k])) inputs have left by exit k; the
    final output takes the rest. Each threshold lies halfway between two
    consecutive sorted entropies, so the strict `entropy < threshold` rule
    gives exactly these counts on `data` (when several inputs share the
    entropy at a boundary, the nearest count that separates them).

    With `budget`: the same rule for the one-parameter family "every side
    exit takes the same share a of the inputs that reach it", with a found by
    bisection so that the expected MACs on `data` are the largest not above
    `budget` (within one input's worth: moving one input from the final
    output to the first exit; ties in the entropies can cost more). On other
    data from the same distribution the expected MACs move by sampling error
    (a few hundredths of the full cost for 500 digits).

    Args:
      model: a multi-exit model (see `attach`).
      data: clean held-out inputs: an (x, y) tuple, x, or a tf.data.Dataset.
      budget: the expected MACs per input as a share of the full model's
        (`exit_macs(model)[-1]`), in (0, 1].
      shares: E non-negative numbers summing to 1: the share of inputs per exit.
      batch_size: rows per forward pass.

    Returns:
      An `ExitPolicy`.

    Raises:
      TypeError: a budget or share that is not a number.
      ValueError: not a multi-exit model; neither or both of budget and
        shares; a budget outside (0, 1] or below the cheapest reachable cost
        (every input at the first exit); shares of the wrong length, negative,
        or not summing to 1.

    Example:
      >>> multi = keras_smart.exits.attach(cnn, after=["conv"])
      >>> policy = keras_smart.exits.calibrate(multi, (x, y), budget=0.999995)
      >>> policy.expected_macs(multi, x) <= 0.999995
      True
    """
    points = structure.exit_points(model)
    macs = costs.exit_macs(model)
    exits = len(points) + 1
    if (budget is None) == (shares is None):
        raise ValueError(
            "`calibrate` takes exactly one of `budget` (expected MACs as a share of the full model's, in (0, 1]) "
            f"and `shares` ({exits} numbers summing to 1). Received: budget={budget!r}, shares={shares!r}"
        )
    if budget is not None:
        budget = validation.check_real(
            budget, "budget", low=0.0, high=1.0, low_open=True, meaning="(a share of the full model's MACs)")
        _check_reachable(budget, macs)
    else:
        shares = check_shares(shares, exits)
    entropies = policy_lib.side_entropies(model, data, batch_size)
    classes = int(model.outputs[-1].shape[-1])
    if budget is not None:
        shares = _budget_shares(entropies, macs, budget, classes)
    thresholds, _ = thresholds_for(entropies, shares, classes)
    tradeoff = float(model.tradeoff_variable.numpy()) if isinstance(model, training.SmartModel) else None
    return policy_lib.ExitPolicy(
        thresholds=thresholds,
        macs=macs,
        exits=tuple(after for _, after in points),
        model_name=model.name,
        budget=budget,
        tradeoff=tradeoff,
    )


def check_shares(shares, exits):
    """`shares` as a tuple of `exits` floats >= 0 summing to 1 (within 1e-6)."""
    if isinstance(shares, (str, bytes)) or not hasattr(shares, "__len__"):
        raise TypeError(f"`shares` must be a sequence of {exits} numbers summing to 1. Received: shares={shares!r}")
    if len(shares) != exits:
        raise ValueError(f"`shares` must hold one share per exit: {exits}. Received: {len(shares)} ({list(shares)})")
    values = tuple(validation.check_real(s, "shares[i]", low=0.0) for s in shares)
    if abs(sum(values) - 1.0) > 1e-6:
        raise ValueError(f"`shares` must sum to 1. Received: {list(values)} (sum {sum(values):g})")
    return values


def thresholds_for(entropies, shares, classes):
    """(thresholds, counts per exit) realising `shares` on `entropies` [E - 1, N] by sequential quantiles.

    `classes` bounds the entropy (log classes): a threshold above it takes every input.
    """
    sides, count = entropies.shape
    targets = np.round(np.cumsum(shares) * count).astype(np.int64)  # inputs gone by each exit
    above_all = float(np.float32(math.log(classes) + 1.0))  # entropies are <= log(classes)
    remaining = np.arange(count)
    thresholds, counts = [], []
    for k in range(sides):
        values = entropies[k, remaining]
        wanted = int(np.clip(targets[k] - (count - len(remaining)), 0, len(remaining)))
        threshold = _threshold(np.sort(values), wanted, above_all)
        taken = values < threshold
        thresholds.append(threshold)
        counts.append(int(taken.sum()))
        remaining = remaining[~taken]
    counts.append(len(remaining))
    return tuple(thresholds), counts


def _threshold(ordered, wanted, above_all):
    """A float32-exact threshold t with `ordered < t` true for `wanted` values (or the nearest count
    that a threshold can separate, when values tie at the boundary)."""
    size = len(ordered)
    if wanted < size and wanted > 0 and ordered[wanted - 1] == ordered[wanted]:
        below = int(np.searchsorted(ordered, ordered[wanted], side="left"))
        above = int(np.searchsorted(ordered, ordered[wanted], side="right"))
        wanted = below if wanted - below <= above - wanted else above
    if wanted <= 0:
        return 0.0  # entropies are >= 0: none is below 0
    if wanted >= size:
        return max(above_all, float(np.nextafter(np.float32(ordered[-1]), np.float32(np.inf))))
    low, high = np.float32(ordered[wanted - 1]), np.float32(ordered[wanted])
    middle = np.float32((np.float64(low) + np.float64(high)) / 2.0)
    if middle <= low:  # neighbouring float32 values: the next one up still separates them
        middle = np.nextafter(low, np.float32(np.inf))
    return float(middle)


def expected_cost(counts, macs):
    """The mean MACs per input for `counts` inputs per exit, as a share of macs[-1]."""
    return float(np.dot(counts, macs) / (np.sum(counts) * macs[-1]))


def rate_shares(rate, exits):
    """Shares of the family "each side exit takes `rate` of the inputs reaching it"."""
    return tuple([rate * (1.0 - rate) ** k for k in range(exits - 1)] + [(1.0 - rate) ** (exits - 1)])


def _budget_shares(entropies, macs, budget, classes):
    """The shares of the smallest exit rate whose expected MACs on `entropies` are within `budget`."""
    exits = len(macs)

    def cost(rate):
        return expected_cost(thresholds_for(entropies, rate_shares(rate, exits), classes)[1], macs)

    low, high = 0.0, 1.0
    if cost(low) <= budget:
        return rate_shares(low, exits)
    for _ in range(_BISECTION_STEPS):
        middle = (low + high) / 2.0
        low, high = (low, middle) if cost(middle) <= budget else (middle, high)
    return rate_shares(high, exits)


def _check_reachable(budget, macs):
    cheapest = macs[0] / macs[-1]
    if budget < cheapest:
        raise ValueError(
            f"`budget` must be at least {cheapest:.6g}, the cost of sending every input out at the first exit "
            f"({macs[0]} of {macs[-1]} MACs). Received: budget={budget:g}. Attach an earlier or cheaper first exit "
            "for a smaller budget."
        )
