"""Losses for partially annotated cases (marginal loss; Shi et al., MedIA 2021, "Marginal loss and
exclusion loss for partially supervised multi-organ segmentation").

A voxel labelled 0 in a case is background *or* any structure the case does not annotate, so its
cross-entropy uses the summed probability of background and every unannotated channel. Dice is
computed only for channels the case annotates (their labels are complete).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def marginal_cross_entropy(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """logits (B, C, H, W); target (B, H, W) channel indices; annotated (B, C) bool."""
    log_probs = F.log_softmax(logits, dim=1)
    merged = (~annotated).clone()
    merged[:, 0] = True
    merged_log = torch.logsumexp(log_probs.masked_fill(~merged[:, :, None, None], float("-inf")), dim=1)
    labelled_log = log_probs.gather(1, target[:, None]).squeeze(1)
    per_voxel = torch.where(target == 0, merged_log, labelled_log)
    return -per_voxel.mean()


def partial_dice_loss(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice over annotated foreground channels, summed over the batch samples that annotate them."""
    probs = F.softmax(logits, dim=1)
    one_hot = F.one_hot(target, probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    weight = annotated.to(probs.dtype)[:, :, None, None]
    intersection = (probs * one_hot * weight).sum(dim=(0, 2, 3))
    totals = ((probs + one_hot) * weight).sum(dim=(0, 2, 3))
    used = annotated[:, 1:].any(dim=0)
    dice = (2 * intersection[1:] + smooth) / (totals[1:] + smooth)
    if not used.any():
        return logits.sum() * 0
    return 1 - dice[used].mean()


def partial_label_loss(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    return marginal_cross_entropy(logits, target, annotated) + partial_dice_loss(logits, target, annotated)
