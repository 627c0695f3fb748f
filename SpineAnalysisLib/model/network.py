"""The sagittal U-Net (MONAI) used for segmentation and level identification.

2D by default; with ``in_channels`` = 1 + 2k it is "2.5D": each sagittal slice is fed together with k
neighbouring slices on either side, ``slice_context_mm`` apart (the nearest slice of a thick-slice scan),
so that the network sees where a structure's lateral edge lies (:func:`input_slice_offsets`).
"""

from __future__ import annotations

from dataclasses import dataclass, asdict

import numpy as np
import torch
from monai.networks.nets import UNet

from .classes import NUM_CHANNELS


@dataclass(frozen=True)
class NetworkConfig:
    channels: tuple[int, ...] = (16, 32, 64, 128, 256)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    num_res_units: int = 1
    in_channels: int = 1
    out_channels: int = NUM_CHANNELS
    dropout: float = 0.0
    slice_context_mm: float = 0.0  # distance (mm) between a slice and the neighbours fed with it (2.5D)

    def __post_init__(self):
        if self.in_channels < 1 or self.in_channels % 2 == 0:
            raise ValueError(f"in_channels must be odd (a slice and as many neighbours on either side), got {self.in_channels}")
        if self.in_channels > 1 and self.slice_context_mm <= 0:
            raise ValueError(f"a network fed {self.in_channels} slices needs slice_context_mm > 0")

    @property
    def neighbours(self) -> int:
        """Neighbouring slices fed on either side of each slice (0: plain 2D)."""
        return (self.in_channels - 1) // 2

    def to_dict(self) -> dict:
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "NetworkConfig":
        fields = {key: tuple(value) if isinstance(value, list) else value for key, value in data.items()}
        return cls(**fields)

    @property
    def size_multiple(self) -> int:
        """Input height and width must be multiples of this."""
        multiple = 1
        for stride in self.strides:
            multiple *= stride
        return multiple


def input_slice_offsets(config: NetworkConfig, slice_spacing_mm: float | None, distance_mm: float | None = None) -> tuple[int, ...]:
    """Slice index offsets of the network's input channels for a volume with this slice spacing.

    ``(0,)`` for a 2D network; else -k*step .. k*step with step = the whole number of slices closest to
    ``distance_mm`` (default: the network's ``slice_context_mm``), at least one slice: neighbours 3 mm
    apart are 3 slices of a 1 mm scan and the adjacent slice of a 4 mm scan.
    """
    if not config.neighbours:
        return (0,)
    distance = config.slice_context_mm if distance_mm is None else distance_mm
    step = max(1, int(round(distance / (slice_spacing_mm or 1.0))))
    return tuple(j * step for j in range(-config.neighbours, config.neighbours + 1))


def gather_slices(volume: np.ndarray, indices, offsets: tuple[int, ...]) -> np.ndarray:
    """Input channels for slices ``indices`` of a (slice, row, column) array: (len(indices), len(offsets), rows, columns).

    Neighbours beyond the first or last slice repeat the edge slice.
    """
    rows = np.clip(np.asarray(indices)[:, None] + np.asarray(offsets)[None, :], 0, volume.shape[0] - 1)
    return volume[rows]


def input_config(network: torch.nn.Module) -> NetworkConfig:
    """The configuration :func:`build_network` gave ``network`` (which slices it is fed); plain 2D otherwise."""
    return getattr(network, "input_config", None) or NetworkConfig()


def inflate_input_channels(state: dict, network: torch.nn.Module) -> dict:
    """Weights of a network fed fewer slices, for ``network``: the extra input channels start at zero.

    Every weight whose input-channel dimension is an odd number smaller than ``network``'s
    ``in_channels`` (1 for a 2D network, 3 for a 2.5D one with one neighbour on either side) is
    widened with the old weights on the middle channels, so the widened network computes what the
    narrower one did and training learns what the further neighbours add. Other weights pass unchanged.
    """
    config = input_config(network)
    if config.in_channels == 1:
        return state
    target = network.state_dict()
    inflated = {}
    for key, value in state.items():
        wanted = target.get(key)
        narrower = (
            wanted is not None and value.ndim >= 2 and wanted.shape[1] == config.in_channels and value.shape[1] < config.in_channels
            and value.shape[1] % 2 == 1 and value.shape[2:] == wanted.shape[2:] and value.shape[0] == wanted.shape[0]
        )  # fmt: skip
        if narrower:
            widened = torch.zeros(wanted.shape, dtype=value.dtype)
            first = (config.in_channels - value.shape[1]) // 2
            widened[:, first : first + value.shape[1]] = value
            value = widened
        inflated[key] = value
    return inflated


def build_network(config: NetworkConfig | None = None) -> torch.nn.Module:
    config = config or NetworkConfig()
    network = UNet(
        spatial_dims=2,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm="batch",
        dropout=config.dropout,
    )
    network.input_config = config  # read by predict_volume: which slices the network is fed
    return network
