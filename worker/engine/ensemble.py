"""A deep ensemble: K networks of one architecture whose class probabilities are averaged
(Lakshminarayanan, Pritzel & Blundell, "Simple and scalable predictive uncertainty estimation
using deep ensembles", NeurIPS 2017). Members differ by their random initialisation; the
ensemble is one ``torch.nn.Module``, so serving, export (ONNX, OpenVINO), batch-norm folding
and the weight average treat it as any other network, and its weights are one safetensors
file with the keys ``members.<k>.<name>``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["Ensemble", "combine_logits"]


class Ensemble(nn.Module):
    """K member networks; the output is the log of their mean softmax probability.

    Args:
        members: K >= 2 networks mapping (N, in_channels, H, W) float to (N, C, H, W) logits.

    Raises:
        ValueError: fewer than two members.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        self.members = nn.ModuleList(members)

    def member_logits(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each member's (N, C, H, W) logits of ``x`` (training takes each member's loss)."""
        return [m(x) for m in self.members]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, C, H, W) float32 log mean probability: :func:`combine_logits` of the members."""
        return combine_logits(self.member_logits(x))


def combine_logits(logits: list[torch.Tensor]) -> torch.Tensor:
    """log(mean_k softmax(logits_k)) over K (N, C, H, W) logits, in float32: logits whose
    softmax is the members' mean probability, so the argmax (label) and the maximum softmax
    (confidence) downstream are the ensemble's.

    A log-sum-exp written with element-wise operations only (max, exp, log): OpenVINO's ONNX
    front end (2025) reduces ``ReduceLogSumExp`` over every axis, which gave a scalar.
    """
    logp = [torch.log_softmax(z.float(), dim=1) for z in logits]
    top = logp[0]
    for z in logp[1:]:
        top = torch.maximum(top, z)
    total = torch.exp(logp[0] - top)
    for z in logp[1:]:
        total = total + torch.exp(z - top)
    return top + torch.log(total) - math.log(len(logp))
