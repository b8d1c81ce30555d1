"""The shared checks for settings users pass: one rule and one message shape for every module.

Every check raises `TypeError` for a value of the wrong type and `ValueError`
for a value out of range, names the argument in backticks, says what was
expected and what was received, and returns the value as a Python scalar.
"""

import math
import numbers
import warnings


def check_int(value, name, *, minimum=None, maximum=None):
    """`value` as an int; bool is refused (True is not a count).

    Example:
      >>> check_int(3, "steps", minimum=1)
      3
      >>> check_int(0, "steps", minimum=1)
      Traceback (most recent call last):
      ...
      ValueError: `steps` must be an int >= 1. Received: steps=0
    """
    bounds = _bounds_text(minimum, maximum, False, False)
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(
            f"`{name}` must be an int{bounds}. Received: {name}={value!r} of type {type(value).__name__}"
        )
    if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
        raise ValueError(f"`{name}` must be an int{bounds}. Received: {name}={value!r}")
    return int(value)


def check_bool(value, name):
    """`value` if it is True or False (numbers and strings are refused: `"False"` is truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"`{name}` must be True or False. Received: {name}={value!r}")
    return value


def check_seed(value, name="seed", *, allow_none=False):
    """An int seed (any sign), or None where `allow_none`."""
    if value is None and allow_none:
        return None
    return check_int(value, name)


def check_real(value, name, *, low=None, high=None, low_open=False, high_open=False, meaning=""):
    """`value` as a float within the given bounds (closed unless `*_open`); NaN is refused.

    `meaning` is appended to the range error, e.g. "(the share of weights a mask keeps)".

    Example:
      >>> check_real(0.5, "density", low=0.0, high=1.0, low_open=True)
      0.5
      >>> check_real(1.5, "density", low=0.0, high=1.0, low_open=True)
      Traceback (most recent call last):
      ...
      ValueError: `density` must be in (0, 1]. Received: density=1.5
    """
    bounds = _bounds_text(low, high, low_open, high_open)
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        # NumPy scalars are numbers.Real; 0-d arrays and tensors are not, on purpose.
        raise TypeError(
            f"`{name}` must be a real number{bounds}. Received: {name}={value!r} of type {type(value).__name__}"
        )
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if math.isnan(value) or too_low or too_high:
        suffix = f" {meaning}" if meaning else ""
        raise ValueError(f"`{name}` must be{bounds}{suffix}. Received: {name}={value:g}")
    return value


def check_positive(value, name):
    """A real number > 0, as a float."""
    return check_real(value, name, low=0.0, low_open=True)


def check_tradeoff(value, name="tradeoff"):
    """A trade-off in [0, 1] (0 = clean, 1 = most robust), as a float."""
    return check_real(value, name, low=0.0, high=1.0, meaning="(0 = clean, 1 = most robust)")


def check_density(value, name="density"):
    """A density in (0, 1] (the share of weights a mask keeps), as a float."""
    return check_real(value, name, low=0.0, high=1.0, low_open=True, meaning="(the share of weights a mask keeps)")


def check_tradeoffs(values, name="tradeoffs"):
    """A non-empty sequence of trade-offs, returned sorted and without repeats as a tuple of floats."""
    if isinstance(values, (str, bytes)) or not hasattr(values, "__iter__"):
        raise TypeError(f"`{name}` must be a sequence of numbers in [0, 1]. Received: {name}={values!r}")
    checked = tuple(sorted({check_tradeoff(v, f"{name}[i]") for v in values}))
    if not checked:
        raise ValueError(f"`{name}` is empty: pass at least one trade-off in [0, 1].")
    return checked


def _bounds_text(low, high, low_open, high_open):
    if low is not None and high is not None:
        return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    if low is not None:
        return f" {'>' if low_open else '>='} {low:g}"
    if high is not None:
        return f" {'<' if high_open else '<='} {high:g}"
    return ""


# --- renamed arguments --------------------------------------------------------------------------------


class _Unset:
    """The default of a deprecated keyword: tells "not passed" from any value."""

    def __repr__(self):
        return "<unset>"


UNSET = _Unset()


def renamed_argument(caller, old_name, old_value, new_name, new_value, new_default=None):
    """The value of an argument renamed from `old_name` to `new_name`, warning when the old name is used.

    The old name keeps working for one release, with a DeprecationWarning;
    passing both names is a TypeError.
    """
    if old_value is UNSET:
        return new_value
    if new_value is not new_default:
        raise TypeError(f"`{caller}` got both `{new_name}` and its old name `{old_name}`: pass only `{new_name}`.")
    warnings.warn(
        f"`{caller}({old_name}=...)` is deprecated and will be removed in the next release: use `{new_name}=`.",
        DeprecationWarning,
        stacklevel=3,
    )
    return old_value
