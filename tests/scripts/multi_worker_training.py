"""Adversarial training under MultiWorkerMirroredStrategy: two worker processes on localhost.

`multi_worker_training.py` (no arguments) runs the whole check and prints one
JSON line (tests/test_multi_worker.py runs it):

1. picks two free loopback ports and starts two workers (TF_CONFIG); worker 1
   stops in the middle of epoch 1 (0-based), after BackupAndRestore has backed
   up epoch 0, and is killed (SIGKILL); then so is worker 0, blocked on its
   dead peer (a cluster manager restarts the whole cluster);
2. restarts both workers on the same addresses: BackupAndRestore resumes from
   epoch 1 and training finishes;
3. meanwhile this process trains the same model with no strategy, on the same
   global batch, uninterrupted: the reference the workers' weights must match.

`multi_worker_training.py worker OUT [stall]` is one worker (TF_CONFIG set by
the parent). The model has no batch-norm (batch-norm statistics are per
replica, so they would differ from one process's); lam is drawn per batch and
PGD starts at x, so that the two runs compute the same steps (see
docs/training.md, "Several workers").
"""

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np

EPOCHS = 3
GLOBAL_BATCH = 16
WAIT_S = 120  # the longest any phase may take before the check fails


def train(strategy, backup_dir, extra_callbacks=()):
    """Builds, compiles and adversarially fits the tiny SmartModel under `strategy`: (model, history, initial weights)."""
    import keras_smart  # pylint: disable=g-import-not-at-top
    from keras_smart import _compat  # pylint: disable=g-import-not-at-top

    keras = _compat.keras
    keras.utils.set_random_seed(0)
    with strategy.scope():
        inputs = keras.Input((8, 8, 1))
        h = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="conv")(inputs)
        outputs = keras.layers.Dense(3, name="logits")(keras.layers.Flatten()(h))
        smart = keras_smart.convert(keras.Model(inputs, outputs), "smart")
        smart.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 3, 64)
    attack = keras_smart.AttackConfig(eps=0.1, steps=2, random_start=False)
    callbacks = [keras_smart.callbacks.AdversarialCallback(attack=attack, sampling="batch", eps_schedule=2)]
    if backup_dir is not None:
        callbacks.append(keras.callbacks.BackupAndRestore(backup_dir))
    initial = [w.numpy() for w in smart.weights]
    history = smart.fit(
        x, y, batch_size=GLOBAL_BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
        callbacks=callbacks + list(extra_callbacks),
    )
    return smart, history, initial


def worker(out, stall):
    """One worker of the cluster TF_CONFIG describes; writes its weights and history to `out`."""
    parent = os.getppid()
    threading.Thread(target=_exit_with, args=(parent,), daemon=True).start()
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    from keras_smart import _compat  # pylint: disable=g-import-not-at-top

    index = json.loads(os.environ["TF_CONFIG"])["task"]["index"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    # tf_keras's BackupAndRestore is multi-worker aware (the chief writes, every worker reads the
    # chief's); Keras 3's writes one file from every process, so each worker keeps its own.
    backup = os.path.join(out, "backup")
    backup = backup if _compat.IS_LEGACY else os.path.join(backup, f"worker_{index}")

    class Stall(_compat.keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.model.optimizer.iterations.numpy() == 5:  # epoch 1, batch 0: the cluster is killed here
                open(os.path.join(out, f"stalled_{index}"), "w").close()
                time.sleep(WAIT_S)

    model, history, _ = train(strategy, backup, [Stall()] if stall else [])
    np.savez(os.path.join(out, f"weights_{index}.npz"), *[w.numpy() for w in model.weights])
    with open(os.path.join(out, f"history_{index}.json"), "w") as f:
        json.dump({"replicas": strategy.num_replicas_in_sync, "epochs": len(history.history["loss"]),
                   "loss": history.history["loss"], "steps": int(model.optimizer.iterations.numpy())}, f)


def _exit_with(parent):
    """Ends this worker when the process that started it is gone (no orphan blocks on a dead cluster)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(1)  # pylint: disable=protected-access


def free_ports(count):
    """`count` loopback ports free right now (the OS picks them)."""
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def start_cluster(ports, out, stall):
    """Starts one worker process per port; returns the processes."""
    cluster = {"worker": [f"127.0.0.1:{p}" for p in ports]}
    procs = []
    for index in range(len(ports)):
        env = {**os.environ, "TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})}
        log = open(os.path.join(out, f"log_{index}_{'first' if stall else 'second'}.txt"), "w")
        args = [sys.executable, os.path.abspath(__file__), "worker", out] + (["stall"] if stall else [])
        procs.append(subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT))
    return procs


def wait_for(condition, procs, out, what):
    """Polls `condition` until it holds; fails with the workers' logs if a worker exits first or time runs out."""
    deadline = time.time() + WAIT_S
    while not condition():
        crashed = [p for p in procs if p.poll() not in (None, 0)]
        if crashed or time.time() > deadline:
            raise RuntimeError(f"workers failed while waiting for {what}:\n{_log_tails(out)}")
        time.sleep(0.1)


def _log_tails(out):
    """The last lines of every worker's log, tensor dumps left out."""
    tails = []
    for name in sorted(n for n in os.listdir(out) if n.startswith("log_")):
        with open(os.path.join(out, name)) as f:
            lines = [l for l in f.read().splitlines() if l.strip() and not l.lstrip().startswith(("[", "]"))]
        tails.append(f"--- {name}\n" + "\n".join(lines[-25:]))
    return "\n".join(tails)


def main():
    if sys.argv[1:2] == ["worker"]:
        worker(sys.argv[2], sys.argv[3:] == ["stall"])
        return
    started = time.time()
    ports = free_ports(2)
    with tempfile.TemporaryDirectory() as out:
        procs = start_cluster(ports, out, stall=True)
        try:
            import tensorflow as tf  # pylint: disable=g-import-not-at-top

            reference, reference_history, initial = train(tf.distribute.get_strategy(), None)
            wait_for(lambda: os.path.exists(os.path.join(out, "stalled_1")), procs, out, "epoch 1")
            for proc in reversed(procs):  # worker 1 first: the failure; then the rest of the cluster
                proc.send_signal(signal.SIGKILL)
                proc.wait()
            backed_up = sorted(os.listdir(os.path.join(out, "backup")))
            procs = start_cluster(ports, out, stall=False)
            wait_for(lambda: all(p.poll() == 0 for p in procs), procs, out, "the resumed training")
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
        histories = [json.load(open(os.path.join(out, f"history_{i}.json"))) for i in range(2)]
        weights = [np.load(os.path.join(out, f"weights_{i}.npz")) for i in range(2)]
        weights = [[w[f"arr_{j}"] for j in range(len(w.files))] for w in weights]
    expected = [w.numpy() for w in reference.weights]
    print(json.dumps({
        "replicas": [h["replicas"] for h in histories],
        "resumed_epochs": [h["epochs"] for h in histories],
        "steps": [h["steps"] for h in histories],
        "reference_steps": int(reference.optimizer.iterations.numpy()),
        "backed_up": backed_up,
        "loss": histories[0]["loss"],
        "reference_loss": reference_history.history["loss"],
        "workers_equal": all(np.array_equal(a, b) for a, b in zip(*weights)),
        "max_abs_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(weights[0], expected)),
        "trained_change": max(float(np.max(np.abs(a - b))) for a, b in zip(expected, initial)),
        "seconds": round(time.time() - started, 1),
    }))


if __name__ == "__main__":
    main()
