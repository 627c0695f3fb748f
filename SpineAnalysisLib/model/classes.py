"""Output channels of the segmentation network and their labels in the SpineAnalysis scheme.

The network predicts one channel per level it was trained on (T10 ... L5, S1 and the discs between
them), so that it learns level identity from context; :mod:`.labelling` then enforces anatomical
order and counts levels from the most confident anchor.
"""

from __future__ import annotations

from .. import labels as scheme

#: Vertebral bodies the network knows, cranial to caudal (VerSe ids).
VERTEBRA_CLASSES: tuple[int, ...] = (17, 18, 19, 20, 21, 22, 23, 24, 26)
#: Discs the network knows (100 + vertebra above): T10-T11 ... L5-S1.
DISC_CLASSES: tuple[int, ...] = tuple(scheme.disc_label(v) for v in VERTEBRA_CLASSES[:-1])
#: Channel index -> scheme label; channel 0 is background.
CHANNEL_LABELS: tuple[int, ...] = (0,) + VERTEBRA_CLASSES + DISC_CLASSES
NUM_CHANNELS = len(CHANNEL_LABELS)
LABEL_TO_CHANNEL = {label: channel for channel, label in enumerate(CHANNEL_LABELS)}
#: Channels of the vertebral bodies, cranial to caudal (the order of VERTEBRA_CLASSES).
VERTEBRA_CHANNELS: tuple[int, ...] = tuple(LABEL_TO_CHANNEL[v] for v in VERTEBRA_CLASSES)


def channel_of(label: int) -> int:
    return LABEL_TO_CHANNEL[label]
