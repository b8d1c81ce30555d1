"""Attacks: pure functions over a model callable and tensors, usable inside `tf.function`."""

from keras_smart.attacks.fgsm import fgsm
from keras_smart.attacks.pgd import pgd

__all__ = ["fgsm", "pgd"]
