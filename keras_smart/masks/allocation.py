"""How many weights each masked kernel keeps per path, and which: keep counts, top-k and the overlap cap.

Every masked kernel keeps, on each path, its `keep` highest-scoring weights.
The keep counts come from the density of each path ("layer" allocation),
from one ranking over all kernels ("global" allocation), and from a floor
(`min_density`); the adversarial mask may be capped in how many weights it
shares with the clean one (`max_overlap`).
"""

import numpy as np


def keep_count(density, size):
    """The weights a density keeps of `size`: round(density * size), at least one."""
    return max(1, int(round(density * size)))


def top_k_mask(scores, keep, blocked=None, max_shared=None):
    """A 0/1 mask of the `keep` highest scores (stable ties).

    With `blocked` (another mask) and `max_shared`, at most `max_shared` kept
    weights may lie inside `blocked`: past that quota the next-best weights
    outside it are taken instead.

    Example:
      >>> top_k_mask(np.array([0.1, 0.9, 0.5, 0.7]), 2)
      array([0., 1., 0., 1.], dtype=float32)
      >>> top_k_mask(np.array([0.1, 0.9, 0.5, 0.7]), 2, blocked=np.array([0, 1, 0, 1]), max_shared=1)
      array([0., 1., 1., 0.], dtype=float32)
    """
    flat = scores.ravel()
    order = np.argsort(-flat, kind="stable")
    if blocked is not None:
        inside = blocked.ravel()[order] > 0
        order = order[~inside | (np.cumsum(inside) <= max_shared)]
        if order.size < keep:
            raise ValueError(
                f"A mask cannot keep {keep} of {flat.size} weights sharing at most {max_shared} with the "
                f"other path's {int(blocked.sum())}: lower the densities or raise `max_overlap`."
            )
    mask = np.zeros(flat.size, np.float32)
    mask[order[:keep]] = 1.0
    return mask.reshape(scores.shape)


class MaskedKernel:
    """One masked kernel: its layer, its mask variables (one per path, or one shared) and its keep counts."""

    def __init__(self, layer, kernel_name, densities):
        self.layer = layer
        self.kernel_name = kernel_name
        self.mask_names = layer.mask_names(kernel_name)
        self.shape = layer.mask_shape(self.mask_names[0])
        self.size = int(np.prod(self.shape))
        self.keep = [keep_count(d, self.size) for d in densities]

    @property
    def kernel(self):
        return np.asarray(getattr(self.layer, self.kernel_name).numpy())

    def assign(self, masks):
        """Stores {mask name: 0/1 array} (as `select` returns) in the layer."""
        for name, mask in masks.items():
            self.layer.assign_mask(name, mask)

    def select(self, scores, max_overlap):
        """{mask name: 0/1 array} from per-mask scores, honouring the overlap constraint."""
        masks = [top_k_mask(scores[0], self.keep[0])]
        if len(scores) == 2:
            max_shared = None if max_overlap is None else int(np.floor(max_overlap * min(self.keep)))
            blocked = None if max_overlap is None else masks[0]
            masks.append(top_k_mask(scores[1], self.keep[1], blocked, max_shared))
        return dict(zip(self.mask_names, masks))


def check_allocation(allocation):
    if allocation not in ("layer", "global"):
        raise ValueError(f'`allocation` must be "layer" or "global". Received: allocation={allocation!r}')
    return allocation


def allocate(kernels, scores, allocation, min_density):
    """Sets every kernel's keep counts for `allocation`, each at least `min_density` of its weights."""
    floors = [0 if min_density is None else keep_count(min_density, k.size) for k in kernels]
    if allocation == "global":
        _allocate_globally(kernels, scores, floors)
    else:
        for kernel, floor in zip(kernels, floors):
            kernel.keep = [max(keep, floor) for keep in kernel.keep]


def _allocate_globally(kernels, scores, floors):
    """Sets each kernel's keep counts from one top-k over the scores of all kernels, per path.

    A kernel's `floors[i]` best weights are kept first, whatever their rank among the others.
    """
    for path in range(len(kernels[0].keep)):
        wanted = sum(k.keep[path] for k in kernels)
        if sum(floors) > wanted:
            raise ValueError(
                f"`min_density` asks for {sum(floors)} weights per path, more than the {wanted} the density "
                "allows: lower `min_density` or raise `density`."
            )
        ranked = []
        for kernel_scores, floor in zip(scores, floors):
            flat = np.ravel(kernel_scores[path]).astype(np.float64)
            if floor:
                flat = flat.copy()
                flat[np.argsort(-flat, kind="stable")[:floor]] = np.inf
            ranked.append(flat)
        flat = np.concatenate(ranked)
        owner = np.repeat(np.arange(len(kernels)), [k.size for k in kernels])
        kept = np.bincount(owner[np.argsort(-flat, kind="stable")[:wanted]], minlength=len(kernels))
        for kernel, count in zip(kernels, kept):
            kernel.keep[path] = max(1, int(count))
