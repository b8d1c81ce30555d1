"""Progress of an evaluation: a tqdm bar when available and wanted, else a log line per step."""

from absl import logging


class Progress:
    """tqdm when available and wanted; otherwise a log line per step (absl.logging)."""

    def __init__(self, total, enabled):
        self.bar = None
        self.enabled = enabled
        if enabled:
            try:
                from tqdm import auto  # pylint: disable=g-import-not-at-top

                self.bar = auto.tqdm(total=total, desc="evaluate_tradeoff", unit="step")
            except ImportError:
                self.bar = None

    def step(self, what):
        """Marks the step `what` (e.g. "λ=0.2 fgsm") as done."""
        if self.bar is not None:
            self.bar.set_postfix_str(what, refresh=False)
            self.bar.update(1)
        elif self.enabled:
            logging.info("evaluate_tradeoff: %s done", what)

    def close(self):
        if self.bar is not None:
            self.bar.close()
