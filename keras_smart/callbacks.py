"""Callbacks: AdversarialCallback turns on once-for-all adversarial training inside `fit`; MaskUpdate designs masks."""

import numpy as np
import tensorflow as tf

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import labels as labels_lib
from keras_smart import masks
from keras_smart import multi_exit_training
from keras_smart import training
from keras_smart import validation

keras = _compat.keras


class AdversarialCallback(keras.callbacks.Callback):
    """Trains a SmartModel once-for-all inside `fit`: OAT's recipe, in-graph attacks.

    Args:
      attack: the training attack, an `AttackConfig` (default: PGD-7, eps 8/255).
      tradeoffs: trade-off values to train (must include 0); default OAT's
        (0, .1, .2, .3, .4, 1). (`lambdas=`, its old name, works for one more
        release, with a DeprecationWarning.)
      sampling: "element" (per example, ceil(clean_share * B) clean) or "batch".
      clean_share: the lam = 0 quota of "element" sampling (OAT: 1/6).
      eps_schedule: None (constant eps); an int n (linear warm-up: epoch e trains
        with eps * min(1, (e + 1) / n)); or a callable `(epoch, eps) -> eps`.
      evaluate: optional `(x, y)` arrays: at each epoch end, clean and attack
        accuracy at each of `evaluate_tradeoffs` go into the logs as
        "clean_acc@<lam>" and "<attack>_acc@<lam>" (History, TensorBoard).
      evaluate_tradeoffs: trade-offs for `evaluate` (default (0.0, 1.0)).
      evaluate_attack: the attack for `evaluate` (default: `attack`), an
        `AttackConfig`; its `name` keys the logs. A converging attack makes the
        epoch-end number trustworthy: `AttackConfig(eps=..., steps=20,
        step_schedule="apgd")` runs APGD-CE and logs "apgd-ce20_acc@<lam>";
        step_schedule="cosine" logs "pgd20-cos_acc@<lam>".
      seed: seed of the lam draws.
      loss: the objective, "oat" (default), "trades" or "ce_tradeoff" (see
        `keras_smart.config.AdversarialLoss`); `beta` weights the robust term
        of the last two (defaults 6 and 8).
      recalibrate: when True (default), `fit` ends with
        `keras_smart.recalibrate_batchnorm` on its own training data: the clean
        path's statistics from clean batches, the adversarial path's from
        `attack`'s examples at the largest trained lam. Short runs and new
        masks leave moving statistics behind the weights; this puts them right.
      recalibration_batches: how many training batches it uses (int >= 1).
      shared_weights: "both" (default) or "adversarial": which loss trains the
        weights both SMART masks keep (see `AdversarialConfig`).
      exit_attack: for a multi-exit model, the attack that makes x_adv:
        "max_average" (default), "average" or "single" (see `AdversarialConfig`);
        it also makes the recalibration's and `evaluate`'s adversarial examples
        (`evaluate` then logs the final exit's accuracies). One-output models
        ignore it.
      exit_index: the exit "single" attacks (default -1: the final exit).

    Example:
      >>> smart.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> attack = keras_smart.AttackConfig(eps=0.3, steps=2)
      >>> history = smart.fit(x, y, batch_size=32, epochs=2, verbose=0, callbacks=[
      ...     keras_smart.callbacks.AdversarialCallback(attack=attack, eps_schedule=2)])
      >>> [round(eps, 3) for eps in history.history["adv_eps"]]  # eps warms up over 2 epochs
      [0.15, 0.3]
    """

    def __init__(
        self,
        attack=None,
        tradeoffs=config_lib.OAT_TRADEOFFS,
        sampling="element",
        clean_share=1 / 6,
        eps_schedule=None,
        evaluate=None,
        evaluate_tradeoffs=(0.0, 1.0),
        evaluate_attack=None,
        seed=0,
        loss="oat",
        beta=None,
        recalibrate=True,
        recalibration_batches=16,
        shared_weights="both",
        exit_attack="max_average",
        exit_index=-1,
        lambdas=validation.UNSET,
    ):
        super().__init__()
        tradeoffs = validation.renamed_argument(
            "AdversarialCallback", "lambdas", lambdas, "tradeoffs", tradeoffs, config_lib.OAT_TRADEOFFS
        )
        self.config = config_lib.AdversarialConfig(
            attack=attack if attack is not None else config_lib.AttackConfig(),
            tradeoffs=tradeoffs,
            sampling=sampling,
            clean_share=clean_share,
            seed=seed,
            loss=loss,
            beta=beta,
            shared_weights=shared_weights,
            exit_attack=exit_attack,
            exit_index=exit_index,
        )
        self.recalibrate = validation.check_bool(recalibrate, "recalibrate")
        self.recalibration_batches = validation.check_int(recalibration_batches, "recalibration_batches", minimum=1)
        if eps_schedule is not None and not callable(eps_schedule):
            try:
                validation.check_int(eps_schedule, "eps_schedule", minimum=1)
            except (TypeError, ValueError):
                raise ValueError(
                    "`eps_schedule` must be None, an int >= 1 (warm-up epochs) or a callable "
                    f"(epoch, eps) -> eps. Received: eps_schedule={eps_schedule!r}"
                ) from None
        self.eps_schedule = eps_schedule
        self.evaluate = evaluate
        self.evaluate_tradeoffs = tuple(config_lib.check_tradeoff(t, "evaluate_tradeoffs[i]") for t in evaluate_tradeoffs)
        self.evaluate_attack = evaluate_attack or self.config.attack

    def eps_at(self, epoch):
        """The attack budget for `epoch` (0-based)."""
        eps = self.config.attack.eps
        if self.eps_schedule is None:
            return eps
        if callable(self.eps_schedule):
            return float(self.eps_schedule(epoch, eps))
        return eps * min(1.0, (epoch + 1) / self.eps_schedule)

    def on_train_begin(self, logs=None):
        if not isinstance(self.model, training.SmartModel):
            raise TypeError(
                "AdversarialCallback trains a SmartModel (what keras_smart.convert returns). "
                f"Received: {type(self.model).__name__}"
            )
        self.model.enable_adversarial(self.config, until_fit_ends=True)
        _compat.build_optimizer(self.model)  # so that the step is traced once
        self.model.make_train_function()  # the one traced by an earlier `fit` with this configuration, if any
        if self.recalibrate:
            self.model.recalibrate_after_fit(
                tradeoffs=(0.0, max(self.config.tradeoffs)),
                attack=self.config.attack,
                max_batches=self.recalibration_batches,
                exit_attack=self.config.exit_attack,
                exit_index=self.config.exit_index,
            )

    def on_epoch_begin(self, epoch, logs=None):
        eps = self.eps_at(epoch)
        if not eps > 0:
            raise ValueError(f"The eps schedule gave eps={eps} at epoch {epoch}; it must be > 0.")
        self.model.adversarial_eps.assign(eps)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["adv_eps"] = float(self.model.adversarial_eps.numpy())
        if self.evaluate is None or logs is None:
            return
        logs.update(
            tradeoff_accuracies(
                self.model, *self.evaluate, self.evaluate_tradeoffs, self.evaluate_attack,
                exit_attack=self.config.exit_attack, exit_index=self.config.exit_index,
            )
        )

    def on_train_end(self, logs=None):
        self.model.disable_adversarial()


class MaskUpdate(keras.callbacks.Callback):
    """Designs a SmartModel's masks inside `fit`: after a warm-up, and optionally again later.

    Until the first design the masks are all ones (a dense warm-up). At the
    start of epoch `warmup_epochs` (0: before any training) the callback calls
    `keras_smart.design_masks` with its arguments; with `refresh_every=n` it
    designs again every n epochs after that. FLOATS' one-shot mask is this
    callback with no refresh. The adversarial scores use the model's training
    attack (from `AdversarialCallback`) unless `attack` is given.

    Args:
      data: (x, y) arrays or a tf.data.Dataset of (x, y) batches that "snip" and
        "learned" score on (ignored, and may be None, for "magnitude"/"random").
      score, density, max_overlap, seed: as in `design_masks`.
      warmup_epochs: int >= 0, the epoch at whose start masks are designed.
      refresh_every: None (design once) or an int >= 1.
      rewind: when True, the first design also puts every trainable weight
        back to its value when `fit` started (lottery-ticket rewinding): the
        masks were chosen on the warm-up's weights, training then starts
        afresh through them. The optimizer's state is kept. A run resumed by
        BackupAndRestore rewinds to the weights it resumed from.
      **design_options: other `design_masks` arguments (attack, loss_fn,
        batch_size, max_batches, steps, learning_rate, granularity, ...).

    Example:
      >>> smart.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
      >>> update = keras_smart.callbacks.MaskUpdate((x, y), score="snip", density=(0.5, 0.3))
      >>> history = smart.fit(x, y, epochs=2, verbose=0, callbacks=[update])
      >>> update.designs  # after one dense warm-up epoch
      [1]
      >>> round(float(np.mean(keras_smart.get_masks(smart)["conv"]["kernel_adv_mask"])), 1)
      0.3
    """

    def __init__(
        self,
        data=None,
        *,
        score="snip",
        density=(0.5, 0.5),
        max_overlap=None,
        seed=0,
        warmup_epochs=1,
        refresh_every=None,
        rewind=False,
        **design_options,
    ):
        super().__init__()
        mask_config = config_lib.MaskConfig(score=score, density=density, seed=seed, max_overlap=max_overlap)
        validation.check_int(warmup_epochs, "warmup_epochs", minimum=0)
        if refresh_every is not None:
            validation.check_int(refresh_every, "refresh_every", minimum=1)
        from_data = mask_config.score in (config_lib.MaskScore.SNIP, config_lib.MaskScore.LEARNED)
        if from_data and data is None:
            raise ValueError(f"score={mask_config.score.value!r} needs `data` to score on.")
        self.data = data if from_data else None
        self.mask_config = mask_config
        self.warmup_epochs = warmup_epochs
        self.refresh_every = refresh_every
        self.rewind = validation.check_bool(rewind, "rewind")
        self._initial_weights = None
        self.design_options = design_options
        self.designs = []  # the epochs at whose start masks were designed

    def due(self, epoch):
        """Whether masks are designed at the start of `epoch` (0-based)."""
        if epoch == self.warmup_epochs:
            return True
        return bool(self.refresh_every) and epoch > self.warmup_epochs and (
            (epoch - self.warmup_epochs) % self.refresh_every == 0
        )

    def on_train_begin(self, logs=None):
        masks.get_masks(self.model)  # fails now, not after the warm-up, on a model without masks
        if self.rewind:
            self._initial_weights = [v.numpy() for v in self.model.trainable_weights]

    def on_epoch_begin(self, epoch, logs=None):
        if not self.due(epoch):
            return
        masks.design_masks(
            self.model,
            score=self.mask_config.score,
            density=self.mask_config.density,
            seed=self.mask_config.seed + epoch,
            max_overlap=self.mask_config.max_overlap,
            data=self.data,
            **self.design_options,
        )
        if self.rewind and not self.designs and self._initial_weights is not None:
            for variable, value in zip(self.model.trainable_weights, self._initial_weights):
                variable.assign(value)
            self._initial_weights = None
        self.designs.append(epoch)


def tradeoff_accuracies(model, x, y, tradeoffs, attack, batch_size=256, *, exit_attack="max_average", exit_index=-1):
    """{"clean_acc@lam": ..., "<attack>_acc@lam": ...} of `model` on arrays (x, y) at each lam.

    For a multi-exit model (several outputs) the accuracies are the final
    exit's, under the multi-exit attack `exit_attack` (`exit_index` for
    "single"; see `keras_smart.AdversarialConfig`).

    `y` holds integer class ids [N] or [N, 1], or one-hot / soft rows [N, classes]
    (read by `keras_smart.labels.class_ids`, which refuses malformed labels up front).

    The attack runs through the path being measured, batch-norm in inference
    mode; the model's trade-off is restored afterwards.
    """
    try:
        classes = model.outputs[0].shape[-1] if model.outputs else None
    except (AttributeError, ValueError):  # a model that was never called has no outputs
        classes = None
    labels_all = labels_lib.class_ids(y, classes)
    if len(labels_all) != len(x):
        raise ValueError(f"`x` holds {len(x)} examples but `y` holds {len(labels_all)} labels.")
    previous = float(model.tradeoff_variable.numpy())
    exits = multi_exit_training.output_count(model)
    attack_fn = tf.function(
        lambda xb, yb: multi_exit_training.run_attack(
            attack, lambda t: model(t, training=False), xb, yb, exits=exits, exit_attack=exit_attack,
            exit_index=exit_index,
        ),
        reduce_retracing=True,
    )
    predict = tf.function(lambda xb: tf.nest.flatten(model(xb, training=False))[-1], reduce_retracing=True)
    results = {}
    try:
        for lam in tradeoffs:
            model.tradeoff_variable.assign(lam)
            clean = adv = 0
            for start in range(0, len(x), batch_size):
                xb = tf.constant(x[start : start + batch_size])
                yb = tf.constant(y[start : start + batch_size])
                labels = labels_all[start : start + batch_size]
                clean += int(np.sum(np.argmax(predict(xb).numpy(), -1) == labels))
                adv += int(np.sum(np.argmax(predict(attack_fn(xb, yb)).numpy(), -1) == labels))
            results[f"clean_acc@{lam:g}"] = clean / len(x)
            results[f"{attack.name}_acc@{lam:g}"] = adv / len(x)
    finally:
        model.tradeoff_variable.assign(previous)
    return results
