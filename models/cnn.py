"""A small ResNet (He et al. 2016, basic blocks): the convolutional baseline of the arrow
experiments (issue 14's "small CNN of the same parameter count")."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from models.vision import _constructor_config


class BasicBlock(nn.Module):
    """conv3×3-BN-ReLU-conv3×3-BN plus the input (projected by a strided 1×1 conv-BN when
    the width or resolution changes), then ReLU: ``[B,C,H,W]`` → ``[B,C',H/s,W/s]``."""

    def __init__(self, channels_in: int, channels: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels_in, channels, 3, stride, 1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, 1, 1, bias=False),
            nn.BatchNorm2d(channels),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or channels_in != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels_in, channels, 1, stride, bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.body(x) + self.shortcut(x))


class ResNetClassifier(nn.Module):
    """images ``[B,C,H,W]`` (any size of at least 2^len(widths) px) → logits
    ``[B,num_classes]``: a 3×3 conv-BN-ReLU stem at stride 2, then per stage i ``blocks``
    :class:`BasicBlock` of width ``widths[i]`` (stride 2 from the second stage on), global
    average pooling and a linear head. Pixels are standardised as ``(x - input_mean) /
    input_std`` inside the model. Average pooling over every position makes the answer's
    statistics independent of the image size, as the pLSTM's corner pooling and the ViT's
    token BatchNorm try to be.

    Not servable (it declares no ``capabilities``): a training baseline only."""

    def __init__(
        self,
        in_chans: int = 3,
        num_classes: int = 2,
        widths: tuple[int, ...] | list[int] = (48, 96, 192, 384),
        blocks: int = 2,
        input_mean: float = 0.0,
        input_std: float = 1.0,
    ) -> None:
        super().__init__()
        widths = list(widths)
        if not widths or any(w < 1 for w in widths) or blocks < 1:
            raise ValueError(f"widths must be positive and blocks >= 1, got {widths}, {blocks}")
        if not (math.isfinite(input_mean) and math.isfinite(input_std) and input_std > 0):
            raise ValueError(f"input_std must be positive, got {input_mean!r}, {input_std!r}")
        self._config = _constructor_config(type(self), locals())
        self.input_mean = float(input_mean)
        self.input_std = float(input_std)
        self.stem = nn.Sequential(
            nn.Conv2d(in_chans, widths[0], 3, 2, 1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(inplace=True),
        )
        layers = []
        channels = widths[0]
        for i, width in enumerate(widths):
            for b in range(blocks):
                layers.append(BasicBlock(channels, width, 2 if i > 0 and b == 0 else 1))
                channels = width
        self.stages = nn.Sequential(*layers)
        self.head = nn.Linear(channels, num_classes)
        self.num_classes = num_classes

    @property
    def config(self) -> dict[str, Any]:
        """Every constructor argument (JSON-serialisable): ``ResNetClassifier(**config)``."""
        return dict(self._config)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """images ``[B,C,H,W]`` → pooled features ``[B,widths[-1]]``."""
        x = (x - self.input_mean) / self.input_std
        return self.stages(self.stem(x)).mean((2, 3))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Pooled ``[B,D]`` → logits ``[B,num_classes]``."""
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
