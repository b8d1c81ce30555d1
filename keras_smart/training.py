"""SmartModel: the Functional model that owns the shared trade-off and trains once-for-all.

Once-for-all adversarial training (OAT's recipe, for every method) lives in
`train_step`, in the graph:

1. draw lam per example (`config.AdversarialConfig`), from a stateless RNG keyed
   by the optimizer step, so that a resumed run draws what it would have drawn;
2. split the batch into a clean group (lam = 0) and an adversarial group (lam > 0),
   of static sizes (element sampling's clean quota comes first; batch sampling
   takes one path for the whole batch), so that the step has fixed shapes and
   compiles with XLA (`jit_compile=True`). The adversarial group's lam vary per
   example: kernels that depend on lam itself (noise, blend) are linear in it
   and compute per example (`ConditionalKernel`), FiLM reads the vector, the
   rest read the path; batch-norm takes each lam value's rows as one batch;
3. per group, with the layers reading that group's lam: make x_adv through that
   path (batch-norm statistics frozen), forward x and x_adv in training mode.
   Each path's batch-norm moving statistics move only with the inputs it serves:
   the clean path's with the clean forward of lam = 0 examples, the adversarial
   path's with adversarial examples (the clean forward of lam > 0 examples
   normalises with its batch statistics but moves none);
4. loss = mean over the batch of the `AdversarialConfig.loss` objective (OAT's
   (1 - lam) * L(x) + lam * L(x_adv) by default; TRADES; the CE trade-off loss),
   through the user's compiled loss (sample weights honoured, regularization
   counted once); compiled metrics see the clean predictions; "adv_accuracy"
   the adversarial ones.

A multi-exit model (several outputs: the exits' logits, earliest first, the
final one last) trains every exit on the same objective, summed over the exits
(RDI-Nets: the sum over exits of 1/2 CE(x) + 1/2 CE(x_adv) is "oat" at lam =
0.5); x_adv comes from the `AdversarialConfig.exit_attack` attack
("max_average" by default). TRADES' KL is summed over the exits, and so is the
KL its attack ascends. One label array serves every exit (see
`keras_smart.multi_exit_training`); "adv_accuracy" is the final exit's.

After an adversarial `fit`, `recalibrate_batchnorm` recomputes each path's
statistics exactly (the `AdversarialCallback` runs it by default).
"""

import tensorflow as tf

from keras_smart import _compat
from keras_smart import config as config_lib
from keras_smart import labels as labels_lib
from keras_smart import losses
from keras_smart import multi_exit_training as exit_training
from keras_smart import recalibration
from keras_smart.attacks import common as attacks_common
from keras_smart.layers import base
from keras_smart.layers import conditional_kernel as ck

keras = _compat.keras


class _Untracked:
    """Holds objects Keras must not track (in tf_keras a tracked metric becomes a model weight)."""

    def __init__(self, **values):
        self.__dict__.update(values)


@_compat.register_serializable
class SmartModel(_compat.MultiWorkerFit, keras.Model):
    """A Functional model whose conditional layers read one shared trade-off variable.

    `keras_smart.convert` returns one. The trade-off lam is a non-trainable
    model weight named "tradeoff": `set_tradeoff` assigns it without retracing,
    `.keras` files and `get_weights`/`set_weights` carry it.

    `fit` trains it the ordinary way until adversarial training is enabled, by
    `keras_smart.callbacks.AdversarialCallback` (or `enable_adversarial`).

    Its constructor has Functional's exact signature (the flavour's own), so
    `.keras` loading, `keras.models.clone_model` and TF-MOT wrapping rebuild a
    SmartModel rather than a plain Functional model.

    Example:
      >>> smart = keras_smart.convert(cnn, method="smart")
      >>> float(smart.tradeoff_variable.numpy())
      0.0
    """

    if _compat.IS_LEGACY:

        def __init__(self, inputs, outputs, name=None, trainable=True, **kwargs):
            super().__init__(inputs=inputs, outputs=outputs, name=name, trainable=trainable, **kwargs)
            self._create_tradeoff()

    else:

        def __init__(self, inputs, outputs, name=None, **kwargs):
            super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)
            self._create_tradeoff()

    def _create_tradeoff(self):
        self._tradeoff = self.add_weight(
            name="tradeoff", shape=(), initializer="zeros", trainable=False
        )
        self._adversarial = _Untracked(
            config=None,
            eps=tf.Variable(1.0, trainable=False, name="adversarial_eps"),
            accuracy=keras.metrics.Mean(name="adv_accuracy"),
            recalibration=None,
            until_fit_ends=False,
            traced={},  # (config, `_trace_key`) -> the adversarial train function traced for it
        )
        self.bind_layers()

    @property
    def tradeoff_variable(self):
        """The non-trainable scalar variable holding lam."""
        return self._tradeoff

    def conditional_layers(self):
        """Every conditional layer in the model, nested models and wrappers included."""
        return [l for l in _compat.flatten_layers(self) if isinstance(l, base.ConditionalLayer)]

    def bind_layers(self):
        """Makes every conditional layer read this model's trade-off variable."""
        for layer in self.conditional_layers():
            layer.bind_tradeoff(self._tradeoff)

    # --- adversarial training -------------------------------------------------------------------

    @property
    def adversarial_config(self):
        """The `AdversarialConfig` `fit` trains with, or None (ordinary training)."""
        return self._adversarial.config

    @property
    def adversarial_eps(self):
        """The variable holding the attack budget in use (an eps schedule assigns it)."""
        return self._adversarial.eps

    def enable_adversarial(self, adversarial_config, *, until_fit_ends=False):
        """Makes `fit` train once-for-all with `adversarial_config` (retraces the train step).

        With `until_fit_ends` (what `AdversarialCallback` asks for when `fit`
        starts), the running `fit` switches adversarial training off again as it
        returns, also when it raises (Ctrl-C, a failing callback): Keras then
        skips `on_train_end`, so a callback alone cannot promise it.
        """
        if not isinstance(adversarial_config, config_lib.AdversarialConfig):
            raise TypeError(
                "`adversarial_config` must be a keras_smart.config.AdversarialConfig. "
                f"Received: {type(adversarial_config).__name__}"
            )
        exit_training.check_outputs(self, adversarial_config)
        attack, size = adversarial_config.attack, tf.TensorShape(self.inputs[0].shape[1:]).num_elements()
        if attack.norm == config_lib.Norm.L2 and size is not None:  # AttackConfig checked L-inf; L2 needs d
            config_lib.check_eps(attack.eps, attack.norm, attack.clip_min, attack.clip_max, size)
        self._switch_train_function(adversarial_config)
        self._adversarial.until_fit_ends = until_fit_ends
        self._adversarial.eps.assign(adversarial_config.attack.eps)

    def disable_adversarial(self):
        """Makes `fit` train the ordinary way again (its train step is traced when `fit` next runs)."""
        self._switch_train_function(None)
        self._adversarial.until_fit_ends = False

    def _switch_train_function(self, adversarial_config):
        """Makes `adversarial_config` (None: ordinary training) the one `fit` trains with.

        The adversarial train function traced for a configuration is kept when
        training switches away from it, and taken up again when the same
        configuration comes back with the model compiled alike (same compile
        call, `jit_compile`, layers' `trainable`): repeated `fit` calls with
        one `AdversarialCallback` trace the step once. Any other switch leaves
        `train_function` to be traced afresh.
        """
        state = self._adversarial
        if adversarial_config == state.config and self.train_function is not None:
            return
        key = self._trace_key()
        if state.config is not None and self.train_function is not None:
            state.traced[(state.config, key)] = self.train_function
        state.config = adversarial_config
        self.train_function = None if adversarial_config is None else state.traced.get((adversarial_config, key))

    def _trace_key(self):
        """What a traced train function depends on besides the adversarial configuration."""
        return (getattr(self, "jit_compile", None), tuple(l.trainable for l in _compat.flatten_layers(self)))

    def recalibrate_after_fit(self, *, tradeoffs, attack, max_batches, exit_attack=None, exit_index=None):
        """Makes the running `fit` end with `recalibrate_batchnorm` on its training data.

        `AdversarialCallback` asks for it when training starts; a `fit` that
        raises does not recalibrate. `exit_attack` and `exit_index` choose a
        multi-exit model's attack (default: max_average).
        """
        self._adversarial.recalibration = dict(
            tradeoffs=tradeoffs, attack=attack, max_batches=max_batches, exit_attack=exit_attack, exit_index=exit_index
        )

    def fit(self, *args, **kwargs):  # pylint: disable=signature-differs
        """`keras.Model.fit`, then batch-norm recalibration if a callback asked for it.

        See `recalibrate_after_fit` and `keras_smart.recalibrate_batchnorm`.
        """
        self._adversarial.recalibration = None
        try:
            history = super().fit(*args, **kwargs)
        finally:
            request, self._adversarial.recalibration = self._adversarial.recalibration, None
            if self._adversarial.until_fit_ends:
                self.disable_adversarial()
        if request is not None:
            recalibration.after_fit(self, args, kwargs, **request)
        return history

    def compile(self, *args, **kwargs):  # pylint: disable=signature-differs
        """`keras.Model.compile`; on several outputs, a flat list of metrics applies to each (both flavours).

        See `keras_smart.multi_exit_training` for what the logs show.
        """
        args, kwargs = exit_training.broadcast_metrics(self, args, kwargs)
        super().compile(*args, **kwargs)
        self._adversarial.traced.clear()  # functions traced with the previous optimizer and loss

    def compile_from_config(self, config):
        """What Keras does when it loads a compiled model, which it skips for any model overriding `compile`.

        Without it a loaded SmartModel would come back uncompiled: no optimizer, no step count to resume from.
        """
        self.compile(**keras.saving.deserialize_keras_object(config))
        optimizer = getattr(self, "optimizer", None)
        if isinstance(optimizer, keras.optimizers.Optimizer) and self.built:
            optimizer.build(self.trainable_variables)  # its variables exist, so the saved state loads into them

    @property
    def metrics(self):
        metrics = list(super().metrics)
        if self._adversarial.config is not None:
            metrics.append(self._adversarial.accuracy)
        return metrics

    def sample_tradeoffs(self, batch_size):
        """lam for each example of a batch, per the adversarial config (a float32 vector)."""
        adversarial = self._adversarial.config
        tradeoffs = tf.constant(adversarial.tradeoffs, tf.float32)
        seed = self._step_seed(0, per_replica=False)
        if adversarial.sampling == config_lib.Sampling.BATCH:
            index = tf.random.stateless_uniform([], seed, maxval=len(adversarial.tradeoffs), dtype=tf.int32)
            return tf.fill([batch_size], tf.gather(tradeoffs, index))
        nonzero = tradeoffs[1:]
        index = tf.random.stateless_uniform([batch_size], seed, maxval=len(adversarial.tradeoffs) - 1, dtype=tf.int32)
        clean = tf.cast(tf.math.ceil(adversarial.clean_share * tf.cast(batch_size, tf.float32)), tf.int32)
        return tf.where(tf.range(batch_size) < clean, 0.0, tf.gather(nonzero, index))

    def _step_seed(self, offset, per_replica=True):
        """A stateless seed, [config seed + offset, optimizer step]: a resumed run draws what it would have drawn.

        With `per_replica`, under a distribution strategy the replica's id is
        folded in, so that replicas draw independently.
        """
        seed = tf.stack(
            [tf.constant(self._adversarial.config.seed + offset, tf.int64), tf.cast(self.optimizer.iterations, tf.int64)]
        )
        if per_replica and tf.distribute.get_strategy().num_replicas_in_sync > 1:
            replica = tf.distribute.get_replica_context().replica_id_in_sync_group
            seed = tf.random.experimental.stateless_fold_in(seed, tf.cast(replica, tf.int64))
        return seed

    def _attack(self, x, y):
        """x_adv through the path the current override selects; batch-norm statistics stay still.

        With the TRADES loss the attack maximises KL(f(x) || f(x_adv)): cross-entropy
        against the model's own (fixed) prediction on x, which differs from that KL
        by a constant.
        """
        adversarial = self._adversarial.config
        training = adversarial.attack.bn_mode == config_lib.BatchNormMode.TRAIN

        def model_fn(inputs):
            with base.frozen_statistics():
                return self(inputs, training=training)

        if adversarial.loss != config_lib.AdversarialLoss.TRADES:
            return self._run_attack(model_fn, x, y)
        return self._trades_attack(model_fn, x)

    def _run_attack(self, model_fn, x, y):
        """The configured attack: `attacks.run` on one output, its `exit_attack` on several."""
        adversarial = self._adversarial.config
        return exit_training.run_attack(
            adversarial.attack, model_fn, x, y, exits=len(self.outputs), exit_attack=adversarial.exit_attack,
            exit_index=adversarial.exit_index, eps=self._adversarial.eps, seed=self._step_seed(2),
        )

    def _trades_attack(self, model_fn, x):
        """TRADES' x_adv: from x + 0.001 * N(0, I) (the KL's gradient is zero at x itself), ascend
        KL(f(x) || f(x_adv)), and stay in the eps-ball around x. The start is keyed by the optimizer
        step, like the lam draws."""
        attack, eps = self._adversarial.config.attack, self._adversarial.eps
        target = _pack([tf.stop_gradient(tf.nn.softmax(tf.cast(o, tf.float32))) for o in tf.nest.flatten(model_fn(x))])
        start = x + tf.cast(0.001 * tf.random.stateless_normal(tf.shape(x), self._step_seed(1)), x.dtype)
        start = attacks_common.clip(start, attack.clip_min, attack.clip_max)
        x_adv = self._run_attack(model_fn, start, target)
        delta = attacks_common.project(x_adv - x, tf.cast(eps, x.dtype), attack.norm)
        return tf.stop_gradient(attacks_common.clip(x + delta, attack.clip_min, attack.clip_max))

    if _compat.IS_LEGACY:

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None):
            """`keras.Model.compute_loss`; a multi-output model's single label array serves every output."""
            return super().compute_loss(x, exit_training.conform_labels(self, y), y_pred, sample_weight)

    else:

        def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
            """`keras.Model.compute_loss`; a multi-output model's single label array serves every output."""
            y = exit_training.conform_labels(self, y)
            return super().compute_loss(x, y, y_pred, sample_weight, training=training)

    def compute_metrics(self, x, y, y_pred, sample_weight=None):
        """`keras.Model.compute_metrics`; a multi-output model's single label array serves every output."""
        return super().compute_metrics(x, exit_training.conform_labels(self, y), y_pred, sample_weight)

    def train_step(self, data):
        if self._adversarial.config is None:
            return super().train_step(data)
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if len(self.outputs) > 1:
            y = exit_training.labels_per_output(self, y)
        batch_size = tf.shape(x)[0]
        if sample_weight is None:
            sample_weight = tf.ones([batch_size], tf.float32)
        if tf.nest.is_nested(sample_weight):
            raise TypeError("Adversarial training takes one sample-weight array, for every output.")
        sample_weight = tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        lam = self.sample_tradeoffs(batch_size)
        with tf.GradientTape() as tape:
            groups = self._batch_groups(x, y, sample_weight, lam)
            loss = self._adversarial_loss(x, groups, batch_size)
            scaled = _compat.scale_loss(self, loss)
        _compat.apply_gradients(self, tape, scaled)
        for group in groups:
            if "adv" in group:  # the final exit's
                self._update_adv_accuracy(group["targets"][-1], group["adv"][-1], group["attacked"])
        clean_in_order = _pack([tf.concat(list(preds), 0) for preds in zip(*(g["clean"] for g in groups))])
        return self.compute_metrics(x, y, clean_in_order, sample_weight)

    def _batch_groups(self, x, y, sample_weight, lam):
        """The batch's groups in row order (see `_group_tensors`): no branch, no data-dependent shape.

        Element sampling puts its ceil(clean_share * B) clean examples first
        (`sample_tradeoffs`): a clean group x[:c] and an adversarial group x[c:]
        whose lam vary per example and reach the layers as a vector (kernels that
        depend on lam itself compute per example, see `ConditionalKernel`). A
        batch too small to have adversarial rows gets one inert row (a copy of
        the first, weighted 0, moving no statistics) instead: TF's CPU kernels
        mis-shape an empty batch. Batch sampling draws one lam for the batch:
        one group, attacked, whose flags (statistics, shared weights, weights)
        follow that lam at run time; a clean batch (lam = 0) discards its attack.
        """
        adversarial = self._adversarial.config
        forward = self._training_forward(x)
        if adversarial.sampling == config_lib.Sampling.BATCH:
            return [self._group_tensors(forward, x, y, sample_weight, lam, attacked=lam[0] > 0.0)]
        size = tf.shape(x)[0]
        clean = tf.cast(tf.math.ceil(adversarial.clean_share * tf.cast(size, tf.float32)), tf.int32)
        groups = []
        if adversarial.clean_share > 0:
            rows = [_rows(value, slice(None, clean)) for value in (x, y, sample_weight, lam)]
            groups.append(self._group_tensors(forward, *rows, attacked=False))
        if adversarial.clean_share < 1:
            first = [_rows(value, slice(None, 1)) for value in (x, y, sample_weight, lam)]
            rows = [_rows(value, slice(clean, None)) for value in (x, y, sample_weight, lam)]
            rows = [_at_least_one_row(value, fill) for value, fill in zip(rows, first)]
            groups.append(self._group_tensors(forward, *rows, attacked=True, real=size > clean))
        return groups

    def _training_forward(self, x):
        """The model's training-mode forward as one traced function of (inputs, per-example lam, whether
        statistics stay still, whether shared weights are held), so that the step's three forwards
        share one trace and one gradient (tracing the model three times took most of the trace time)."""
        hold = self._adversarial.config.shared_weights == "adversarial"

        def forward(inputs, lam, frozen, held):
            with base.tradeoff_override(lam), self._batch_norm_groups(lam), base.frozen_statistics(frozen):
                with base.holding_shared_weights(held if hold else False):
                    return self._forward(inputs, True)

        signature = [
            tf.TensorSpec([None, *x.shape[1:]], x.dtype),
            tf.TensorSpec([None], tf.float32),
            tf.TensorSpec([], tf.bool),
            tf.TensorSpec([], tf.bool),
        ]
        return tf.function(forward, input_signature=signature, autograph=False)

    def _batch_norm_groups(self, lam):
        """`base.batch_norm_groups` for the step: each lam value's rows are one batch where they can differ."""
        adversarial = self._adversarial.config
        mixed = adversarial.sampling != config_lib.Sampling.BATCH and len(set(adversarial.tradeoffs) - {0.0}) > 1
        return base.batch_norm_groups(adversarial.tradeoffs if mixed else (), lam)

    def _group_tensors(self, forward, x_g, y_g, w_g, lam_g, *, attacked, real=True):
        """One group's tensors for the loss, a dict; its lists hold one tensor per output.

        "clean" logits, "targets" and "clean_weight" row weights; an attacked
        group adds "adv" logits, "adv_weight" row weights, "attacked" (the
        sample weights adversarial accuracy counts) and, for TRADES, "kl" (the
        weighted KL per row). `attacked` and `real` (False: an inert row) are
        Python booleans or boolean tensors; `forward` is `_training_forward`'s.
        """
        adversarial = self._adversarial.config
        if real is not True:
            w_g = w_g * tf.cast(real, w_g.dtype)
        clean_weight, adv_weight = (w * w_g for w in losses.row_weights(adversarial, lam_g))
        group = {"targets": y_g if isinstance(y_g, list) else [y_g], "clean_weight": clean_weight}
        hold = adversarial.shared_weights == "adversarial"
        if attacked is False:
            group["clean"] = forward(x_g, tf.zeros_like(lam_g), tf.constant(False), tf.constant(hold))
            return group
        # Every lam > 0 shares the adversarial path. A path's moving statistics come from the
        # inputs it serves: the adversarial path's from adversarial examples, not from this
        # clean pass (which moves the clean path's in a clean batch).
        with base.tradeoff_override(lam_g), self._batch_norm_groups(lam_g):
            x_adv = self._attack(x_g, y_g)
        flags = (tf.convert_to_tensor(v) for v in (attacked, _both(hold, _negated(attacked)), _negated(_both(attacked, real))))
        frozen_clean, held, frozen_adv = flags
        group["clean"] = forward(x_g, lam_g, frozen_clean, held)
        group["adv"] = forward(x_adv, lam_g, frozen_adv, tf.constant(False))
        group.update(adv_weight=adv_weight, attacked=w_g * tf.cast(attacked, w_g.dtype))
        if adversarial.loss == config_lib.AdversarialLoss.TRADES:
            group["kl"] = adv_weight * losses.summed_kl_divergence(group["clean"], group["adv"])
        return group

    def _forward(self, x, training):
        """The model's outputs on x, as a list (one entry per output)."""
        return tf.nest.flatten(self(x, training=training))

    def _adversarial_loss(self, x, groups, batch_size):
        """The batch's loss through the compiled loss: the per-example mean of every group's objective.

        A group feeds its clean rows, and its adversarial rows unless TRADES' KL
        replaces them (an extra loss term).
        """
        rows = []  # (logits, targets, weights)
        for group in groups:
            rows.append((group["clean"], group["targets"], group["clean_weight"]))
            if "adv" in group and "kl" not in group:
                rows.append((group["adv"], group["targets"], group["adv_weight"]))
        kl_terms = [group["kl"] for group in groups if "kl" in group]
        # The compiled loss averages over every row it sees (clean and adversarial);
        # rescale so that the result is the per-example mean over the batch.
        count = tf.add_n([tf.shape(logits[0])[0] for logits, _, _ in rows])
        scale = tf.cast(count, tf.float32) / tf.cast(batch_size, tf.float32)
        extra = None
        if kl_terms:
            extra = tf.reduce_sum(tf.concat(kl_terms, 0)) / tf.cast(batch_size, tf.float32)
        logits, targets, weights = zip(*rows)
        return _compat.training_loss(
            self,
            x,
            _pack([tf.concat(list(t), 0) for t in zip(*targets)]),
            _pack([tf.concat(list(p), 0) for p in zip(*logits)]),
            tf.concat(weights, 0) * scale,
            batch_size,
            extra_loss=extra,
        )

    def _update_adv_accuracy(self, y, pred, weight):
        labels = labels_lib.ids_tensor(y, pred)  # ids [B] or [B, 1], or one-hot / soft rows
        correct = tf.cast(tf.equal(labels, tf.argmax(pred, -1, output_type=tf.int32)), tf.float32)
        self._adversarial.accuracy.update_state(correct, sample_weight=weight)


def _pack(per_output):
    """A list with one tensor per output as the model's output structure: the tensor itself for one output."""
    return per_output[0] if len(per_output) == 1 else list(per_output)


def _both(a, b):
    """a and b, for Python booleans and boolean tensors alike."""
    if a is False or b is False:
        return False
    if a is True or b is True:
        return b if a is True else a
    return tf.logical_and(a, b)


def _negated(a):
    return (not a) if isinstance(a, bool) else tf.logical_not(a)


def _at_least_one_row(value, fill):
    """`value`, or `fill` (one row) when `value` has no rows; each tensor of a list alike."""
    if isinstance(value, list):
        return [_at_least_one_row(v, f) for v, f in zip(value, fill)]
    return tf.concat([value, fill], 0)[: tf.maximum(tf.shape(value)[0], 1)]


def _rows(value, part):
    """`value[part]`, or each tensor of a list sliced (then a list)."""
    if isinstance(value, list):
        return [v[part] for v in value]
    return value[part]
