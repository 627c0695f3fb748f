"""The 2D sagittal U-Net (MONAI) used for segmentation and level identification."""

from __future__ import annotations

from dataclasses import dataclass, asdict

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


def build_network(config: NetworkConfig | None = None) -> torch.nn.Module:
    config = config or NetworkConfig()
    return UNet(
        spatial_dims=2,
        in_channels=config.in_channels,
        out_channels=config.out_channels,
        channels=config.channels,
        strides=config.strides,
        num_res_units=config.num_res_units,
        norm="batch",
        dropout=config.dropout,
    )
