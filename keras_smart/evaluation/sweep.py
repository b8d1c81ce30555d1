"""The sweep: every attack of one evaluation, run at the model's current trade-off, row after row.

The compiled attacks are built once per evaluation and shared by every
trade-off row (the trade-off variable is read inside them). Each attack runs
only on the examples still classified correctly, in batches, and reports the
per-example correctness on its output.
"""

import math

import numpy as np
import tensorflow as tf

from keras_smart import attacks as attacks_lib
from keras_smart import config as config_lib
from keras_smart.evaluation import art
from keras_smart.evaluation import forward as forward_lib
from keras_smart.evaluation import masking
from keras_smart.evaluation import suite


class Sweep:
    """Runs the attacks for one evaluation: compiled functions shared by every trade-off row.

    Every function compiled here is seeded with `seed` (graph-level, see
    `forward.compile_fn`): random starts, Square's draws and weight noise
    reproduce, and TensorFlow's global seed is left alone.
    """

    def __init__(self, model, x, labels, *, eps, norm, clip, batch_size, seed, options, expected_noise, forward=None):
        self.x = x
        self.labels = labels
        self.eps = eps
        self.norm = norm
        self.clip = clip
        self.batch_size = batch_size
        self.seed = seed
        self.options = options
        # What the attacks and predictions see: the model's logits (a multi-exit sweep passes its routed logits).
        self.forward = forward or forward_lib.Forward(model, expected_noise=expected_noise)
        self._specs = (tf.TensorSpec([None, *x.shape[1:]], tf.float32), tf.TensorSpec([None], tf.int64))
        self._predict = forward_lib.compile_fn(self.forward, self._specs[0], seed=seed)
        self._compiled = {}

    # --- batches ------------------------------------------------------------------------------------

    def _chunks(self, index):
        for start in range(0, len(index), self.batch_size):
            yield index[start : start + self.batch_size]

    def logits(self, index):
        """The logits of the examples `index`."""
        out = [self._predict(tf.constant(self.x[c])).numpy() for c in self._chunks(index)]
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def predictions(self, x):
        """The predicted classes of the inputs `x`."""
        out = [np.argmax(self._predict(tf.constant(x[c])).numpy(), -1) for c in self._chunks(np.arange(len(x)))]
        return np.concatenate(out) if out else np.zeros((0,), np.int64)

    # --- compiled attacks ---------------------------------------------------------------------------

    def attack_config(self, name):
        """The `AttackConfig` of "fgsm", "pgd<K>" or "large-eps" (PGD-20 at `large_eps()`)."""
        lo, hi = self.clip
        if name == "fgsm":
            return config_lib.AttackConfig(kind="fgsm", eps=self.eps, norm=self.norm, clip_min=lo, clip_max=hi)
        if name == "large-eps":
            return config_lib.AttackConfig(
                kind="pgd", eps=self.large_eps(), steps=masking.LARGE_EPS_STEPS, norm=self.norm, clip_min=lo,
                clip_max=hi,
            )
        steps = int(name[3:])
        return config_lib.AttackConfig(kind="pgd", eps=self.eps, steps=steps, norm=self.norm, clip_min=lo, clip_max=hi)

    def _attack_fn(self, name, eot):
        """The compiled in-graph attack: f(x, y) -> x_adv (for "apgd-dlr": f(x, y, target) -> x_adv)."""
        key = (name, eot)
        if key not in self._compiled:
            attack, specs = self.in_graph_attack(name, eot)
            self._compiled[key] = forward_lib.compile_fn(attack, *specs, seed=self.seed)
        return self._compiled[key]

    def in_graph_attack(self, name, eot):
        """(attack function, its input specs) of `name` with `eot` draws per gradient (subclasses add names)."""
        x_spec, y_spec = self._specs
        lo, hi = self.clip
        shared = {"eps": self.eps, "clip_min": lo, "clip_max": hi, "seed": self.seed, "eot_samples": eot}
        if name == "apgd-dlr":
            steps = self.options["apgd-dlr"]["steps"]

            def targeted(x, y, target):
                return attacks_lib.apgd(
                    self.forward, x, y, steps=steps, norm=self.norm, loss="dlr", target=target, **shared
                )

            return targeted, (x_spec, y_spec, y_spec)
        if name == "apgd-ce":
            steps = self.options["apgd-ce"]["steps"]

            def attack(x, y):
                return attacks_lib.apgd(self.forward, x, y, steps=steps, norm=self.norm, **shared)

        elif name == "square":
            queries, p_init = self.options["square"]["queries"], self.options["square"]["p_init"]

            def attack(x, y):
                return attacks_lib.square(self.forward, x, y, queries=queries, p_init=p_init, **shared)

        else:  # fgsm, pgd<K>, large-eps
            config = self.attack_config(name)

            def attack(x, y):
                return attacks_lib.run(config, self.forward, x, y, seed=self.seed, eot_samples=eot)

        return attack, (x_spec, y_spec)

    # --- running attacks ----------------------------------------------------------------------------

    def run_row(self, names, components, eot, row, step):
        """Clean correctness and {attack: per-example correctness} at the model's current trade-off.

        Listed attacks run on every clean-correct example; autoattack's parts
        that are not listed run in order on what the earlier parts left robust
        (as "autoattack:<part>"), and "autoattack" is the per-example conjunction.
        `step(what)` is called after each stage (progress).
        """
        clean = np.argmax(self.logits(np.arange(len(self.x))), -1) == self.labels
        step("clean")
        results = {}
        for name in components:
            if name in suite.AUTOATTACK and name not in names:
                continue  # runs inside autoattack, on the survivors
            results[name] = self.attack(name, clean, eot, row)
            step(name)
        if "autoattack" in names:
            chain = clean.copy()
            for part in suite.AUTOATTACK:
                if part not in results:
                    results[f"autoattack:{part}"] = self.attack(part, chain, eot, row)
                    step(f"autoattack:{part}")
                chain &= results.get(part, results.get(f"autoattack:{part}"))
            results["autoattack"] = chain
        return clean, results

    def attack(self, name, mask, eot, row):
        """Per-example correctness after `name`, on the examples in `mask` (False elsewhere).

        Each restart attacks only the examples still classified correctly.
        """
        if name == "apgd-dlr":
            return self._targeted(mask, eot)
        correct = mask.copy()
        if name == "square" and self.norm == config_lib.Norm.L2:
            return self._art_square(np.flatnonzero(mask), eot, row, correct)
        fn = self._attack_fn(name, eot)
        kind = suite.kind(name)
        restarts = self.options[kind]["restarts"] if kind in self.options else 1
        for _ in range(restarts):
            for chunk in self._chunks(np.flatnonzero(correct)):
                x_adv = fn(tf.constant(self.x[chunk]), tf.constant(self.labels[chunk])).numpy()
                correct[chunk] = self.predictions(x_adv) == self.labels[chunk]
        return correct

    def _targeted(self, mask, eot):
        """AutoAttack's APGD-T: a targeted DLR run per top-ranked wrong class, on the still-robust examples."""
        fn = self._attack_fn("apgd-dlr", eot)
        settings = self.options["apgd-dlr"]
        correct = mask.copy()
        index = np.flatnonzero(mask)
        if not len(index):
            return correct
        logits = self.logits(index)
        classes = logits.shape[-1]
        ranking = np.full((len(self.x), classes), -1, np.int64)
        ranking[index] = np.argsort(-logits, axis=-1, kind="stable")
        for _ in range(settings["restarts"]):
            for rank in range(1, min(settings["target_classes"], classes - 1) + 1):
                for chunk in self._chunks(np.flatnonzero(correct)):
                    x, y, target = (tf.constant(a) for a in (self.x[chunk], self.labels[chunk], ranking[chunk, rank]))
                    correct[chunk] = self.predictions(fn(x, y, target).numpy()) == self.labels[chunk]
        return correct

    def _art_square(self, index, eot, row, correct):
        """L2 Square through IBM ART's SquareAttack (ours is L-inf only), on the examples in `index`."""
        if not len(index):
            return correct
        square_attack = art.import_art("art.attacks.evasion", "SquareAttack")
        settings = self.options["square"]
        classes = int(self._predict(tf.constant(self.x[:1])).shape[-1])
        estimator = art.classifier(
            self.forward, nb_classes=classes, input_shape=tuple(self.x.shape[1:]), clip_values=self.clip,
            batch_size=self.batch_size, seed=self.seed,
        )
        attack = square_attack(
            estimator, norm=2, eps=self.eps, max_iter=settings["queries"], p_init=settings["p_init"],
            nb_restarts=settings["restarts"], batch_size=self.batch_size, verbose=False,
            loss=_eot_margin(estimator, eot, self.batch_size) if eot > 1 else None,
        )
        onehot = np.eye(classes, dtype=np.float32)[self.labels[index]]
        state = np.random.get_state()  # ART draws from NumPy's global generator: seed it, then restore it
        np.random.seed((self.seed * 7919 + row) % 2**32)
        try:
            x_adv = attack.generate(self.x[index], onehot)
        finally:
            np.random.set_state(state)
        correct[index] = self.predictions(x_adv) == self.labels[index]
        return correct

    # --- the large-budget check ---------------------------------------------------------------------

    def large_eps_accuracy(self, clean, eot, row):
        """Accuracy under PGD-20 at a budget that reaches one common input (the middle of the range) from any input."""
        return float(self.attack("large-eps", clean, eot, row).mean())

    def large_eps(self):
        """The budget of the large-eps check: half the input range (L2: times sqrt(d)), at least eps."""
        half = 0.5 * (self.clip[1] - self.clip[0])
        if self.norm == config_lib.Norm.LINF:
            return max(half, self.eps)
        return max(half * math.sqrt(float(np.prod(self.x.shape[1:]))), self.eps)


def _eot_margin(estimator, eot, batch_size):
    """EOT for a gradient-free attack: Square's loss as the margin of the mean of `eot` draws."""

    def loss(x, y_onehot):
        logits = np.mean([estimator.predict(x, batch_size=batch_size) for _ in range(eot)], axis=0)
        true = np.argmax(y_onehot, axis=1)
        correct_logit = logits[np.arange(len(x)), true]
        logits[np.arange(len(x)), true] = -np.inf
        return correct_logit - logits.max(axis=1)

    return loss
