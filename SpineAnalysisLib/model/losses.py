"""Losses for partially annotated cases (marginal loss; Shi et al., MedIA 2021, "Marginal loss and
exclusion loss for partially supervised multi-organ segmentation").

A voxel labelled 0 in a case is background *or* any structure the case does not annotate, so its
cross-entropy uses the summed probability of background and every unannotated channel. A voxel
labelled :data:`~.dataset.NOT_BODY` (the uncertain border of a gap pseudo-disc) is background or a
disc, so its cross-entropy uses the summed probability of those channels. A voxel labelled
:data:`~.dataset.UNKNOWN` is left out of every term. Dice is computed only for channels the case annotates,
leaving out the voxels whose membership of that channel is unknown.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .classes import CHANNEL_LABELS, DISC_CLASSES, VERTEBRA_CLASSES
from .dataset import NOT_BODY, UNKNOWN

_DISC_CHANNELS = torch.tensor([label in DISC_CLASSES for label in CHANNEL_LABELS])
_BODY_CHANNELS = torch.tensor([label in VERTEBRA_CLASSES for label in CHANNEL_LABELS])


def _log_sum_over(log_probs: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """log of the summed probability of the ``channels`` (B, C) bool per sample -> (B, H, W)."""
    return torch.logsumexp(log_probs.masked_fill(~channels[:, :, None, None], float("-inf")), dim=1)


def marginal_cross_entropy(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor) -> torch.Tensor:
    """logits (B, C, H, W); target (B, H, W) channel indices, NOT_BODY or UNKNOWN; annotated (B, C) bool."""
    log_probs = F.log_softmax(logits, dim=1)
    merged = (~annotated).clone()
    merged[:, 0] = True
    per_voxel = torch.where(target == 0, _log_sum_over(log_probs, merged), 0.0)
    not_body = target == NOT_BODY
    unknown = target == UNKNOWN
    labelled = log_probs.gather(1, target.masked_fill(not_body | unknown, 0)[:, None]).squeeze(1)
    per_voxel = torch.where((target != 0) & ~not_body & ~unknown, labelled, per_voxel)
    if not_body.any():
        background_or_disc = merged | _DISC_CHANNELS.to(merged.device)[None]
        per_voxel = torch.where(not_body, _log_sum_over(log_probs, background_or_disc), per_voxel)
    if unknown.any():  # per_voxel is 0 there; the mean is over the known voxels
        return -per_voxel.sum() / (~unknown).sum().clamp(min=1)
    return -per_voxel.mean()


def _probabilities_and_targets(logits: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax probabilities, one-hot targets (NOT_BODY and UNKNOWN voxels as background), the NOT_BODY and the UNKNOWN mask."""
    probs = F.softmax(logits, dim=1)
    not_body = target == NOT_BODY
    unknown = target == UNKNOWN
    one_hot = F.one_hot(target.masked_fill(not_body | unknown, 0), probs.shape[1]).permute(0, 3, 1, 2).to(probs.dtype)
    return probs, one_hot, not_body, unknown


def partial_dice_loss(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice over annotated foreground channels, summed over the batch samples that annotate them."""
    return _partial_dice(*_probabilities_and_targets(logits, target), annotated, smooth)


def _partial_dice(probs: torch.Tensor, one_hot: torch.Tensor, not_body: torch.Tensor, unknown: torch.Tensor, annotated: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    weight = annotated.to(probs.dtype)[:, :, None, None].expand_as(probs)
    if unknown.any():
        weight = weight.masked_fill(unknown[:, None], 0.0)
    if not_body.any():  # a border voxel's disc membership is unknown: left out of the disc channels
        disc_unknown = not_body[:, None] & _DISC_CHANNELS.to(probs.device)[None, :, None, None]
        weight = weight.masked_fill(disc_unknown, 0.0)
    intersection = (probs * one_hot * weight).sum(dim=(0, 2, 3))
    totals = ((probs + one_hot) * weight).sum(dim=(0, 2, 3))
    used = annotated[:, 1:].any(dim=0)
    dice = (2 * intersection[1:] + smooth) / (totals[1:] + smooth)
    if not used.any():
        return probs.sum() * 0
    return 1 - dice[used].mean()


def class_dice_loss(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    """Soft Dice of the vertebral-body class and the disc class, each the union of its levels.

    The per-level Dice of :func:`partial_dice_loss` weighs a level cut by the crop as much as a whole
    one; this term weighs every voxel of the class alike, as the class Dice that ``evaluate`` reports
    does, and scores the summed body probability that inference thresholds
    (:class:`~.predict.InferenceSettings`). Partial labels: a sample's class probability sums only the
    levels it annotates (a voxel of an unannotated level is unknown, not background), samples that
    annotate no level of a class are left out of it, and a :data:`~.dataset.NOT_BODY` voxel counts as
    not body and is left out of the disc class.
    """
    return _class_dice(*_probabilities_and_targets(logits, target), annotated, smooth)


def _class_dice(probs: torch.Tensor, one_hot: torch.Tensor, not_body: torch.Tensor, unknown_class: torch.Tensor, annotated: torch.Tensor, smooth: float = 1.0) -> torch.Tensor:
    scores = []
    disc_unknown = not_body | unknown_class
    for channels, unknown in ((_BODY_CHANNELS, unknown_class if unknown_class.any() else None), (_DISC_CHANNELS, disc_unknown)):
        used = annotated & channels.to(annotated.device)[None]  # (B, C)
        samples = used.any(dim=1)
        if not samples.any():
            continue
        mask = used.to(probs.dtype)[:, :, None, None]
        predicted = (probs * mask).sum(dim=1)[samples]
        truth = (one_hot * mask).sum(dim=1)[samples]
        if unknown is not None:
            known = (~unknown[samples]).to(probs.dtype)
            predicted, truth = predicted * known, truth * known
        scores.append((2 * (predicted * truth).sum() + smooth) / (predicted.sum() + truth.sum() + smooth))
    if not scores:
        return probs.sum() * 0
    return 1 - torch.stack(scores).mean()


def partial_label_loss(logits: torch.Tensor, target: torch.Tensor, annotated: torch.Tensor, class_dice_weight: float = 0.0) -> torch.Tensor:
    """Marginal cross-entropy + per-level partial Dice (+ ``class_dice_weight`` x :func:`class_dice_loss`)."""
    prepared = _probabilities_and_targets(logits, target)  # once for both Dice terms (every training step)
    loss = marginal_cross_entropy(logits, target, annotated) + _partial_dice(*prepared, annotated)
    if class_dice_weight:
        loss = loss + class_dice_weight * _class_dice(*prepared, annotated)
    return loss
