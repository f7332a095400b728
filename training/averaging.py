"""An exponential moving average (EMA) of a network's weights, with a time constant given as
a fraction of the training run rather than as a per-step decay.

The default recipe fits its schedule to wall-clock time, so the number of steps is not known
in advance; a per-step decay of 0.99 would average over 3 % of a fast run and 30 % of a slow
one. Here each update moves the average towards the current weights by
``1 - exp(-d / tau)``, ``d`` the fraction of the run since the previous update and ``tau``
the time constant (fraction of the run), so the average covers the same share of the run on
any machine. Parameters and buffers (batch-norm statistics) are averaged alike (Polyak &
Juditsky, "Acceleration of stochastic approximation by averaging", 1992; Izmailov et al.,
"Averaging weights leads to wider optima and better generalization", UAI 2018). The averaging
itself is ``torch.optim.swa_utils.AveragedModel``.
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["WeightAverage"]


class WeightAverage:
    """The running average of ``model``'s weights (a copy of the network; ``model`` is not
    changed).

    Args:
        model: The network being trained.
        tau: Time constant as a fraction of the run (e.g. 0.1: weights of the last ~10 % of
            the run dominate), > 0.

    Raises:
        ValueError: ``tau`` not positive.
    """

    def __init__(self, model, tau: float):
        from torch.optim.swa_utils import AveragedModel

        if not tau or tau <= 0:
            raise ValueError(f"the weight average's time constant must be > 0, got {tau}")
        self.tau = float(tau)
        self._rate = 0.0
        self._at = 0.0
        self.averaged = AveragedModel(model, multi_avg_fn=self._step, use_buffers=True)

    def _step(self, averaged: list, current: list, n_averaged) -> None:
        """One group of same-dtype tensors (``AveragedModel``'s ``multi_avg_fn``): floating
        ones in one fused ``lerp`` (as ``torch.optim.swa_utils.get_ema_multi_avg_fn``),
        integer counters (batch norms' ``num_batches_tracked``) take the current value."""
        import torch

        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, self._rate)
        else:
            for a, c in zip(averaged, current, strict=True):
                a.copy_(c)

    def update(self, model, progress: float) -> None:
        """Move the average towards ``model``'s weights after a step at ``progress`` (fraction
        of the run done, 0..1; the first update copies the weights)."""
        self._rate = 1.0 - math.exp(-max(progress - self._at, 0.0) / self.tau)
        self._at = progress
        self.averaged.update_parameters(model)

    @property
    def module(self):
        """The averaged network (same class and state_dict keys as the trained one)."""
        return self.averaged.module

    def state_dict(self) -> dict[str, Any]:
        """Tensors to checkpoint: the averaged network, the update count and the progress of
        the last update."""
        import torch

        return {**self.averaged.state_dict(),
                "progress": torch.tensor(self._at, dtype=torch.float64)}

    def load_state_dict(self, tensors: dict[str, Any]) -> None:
        """Restore from :meth:`state_dict`."""
        tensors = dict(tensors)
        self._at = float(tensors.pop("progress"))
        self.averaged.load_state_dict(tensors)
