"""A small fully convolutional U-Net for camera images: the 2D teacher of the synthetic demonstration (decision 62).

Encoder: four stages of two 3 x 3 convolutions each (GroupNorm, ReLU), at 1, 1/2, 1/4 and 1/8 of
the image's resolution (2 x 2 max pooling between them), widths :data:`WIDTHS`. Decoder: three
stages, each upsampling (bilinear, to the skip's exact size, so any image size works) and
concatenating the encoder stage of that resolution (the U-Net skip), then one 3 x 3 convolution
(GroupNorm, ReLU). A 1 x 1 convolution maps the last decoder features to ``num_classes`` logits.
About 255k parameters; a 160 x 96 image costs about 0.14 GMAC forward.

``forward`` returns ``(logits, features)``: (B, K, H, W) logits and the head's input features
(B, C, H', W'), average-pooled by :data:`FEATURE_STRIDE` (the feature maps written for L_topo);
``segment`` gives one image's probabilities and features as (H, W, K) and (H', W', C) arrays.
GroupNorm rather than BatchNorm: batches of a few images, and the same arithmetic in training and
prediction. The model holds plain tensors only; :func:`build_image_segmenter` rebuilds it from the
spec dict stored with its checkpoint.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

WIDTHS: tuple[int, ...] = (16, 32, 64, 64)  # channels of the encoder stages, full resolution first
CHANNELS_PER_GROUP = 8  # GroupNorm groups = channels // 8
FEATURE_STRIDE = 2  # the feature maps' pixels are 2 x 2 image pixels
COLOUR_MEAN, COLOUR_STD = 0.5, 0.25  # images in [0, 1] are centred with these


def colour_batch(colours: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) uint8 colours -> (B, 3, H, W) float32 in [0, 1], the network's input."""
    return torch.from_numpy(np.ascontiguousarray(colours)).permute(0, 3, 1, 2).float().div_(255.0)


def _conv_norm_relu(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
            nn.GroupNorm(max(1, c_out // CHANNELS_PER_GROUP), c_out), nn.ReLU(inplace=True)]


class ImageSegmenter(nn.Module):
    """The U-Net of the module docstring: (B, 3, H, W) colours in [0, 1] -> logits and features."""

    def __init__(self, num_classes: int, widths: tuple[int, ...] = WIDTHS) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"ImageSegmenter: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes
        self.widths = tuple(widths)
        ins = (3, *self.widths[:-1])
        self.encoder = nn.ModuleList(nn.Sequential(*_conv_norm_relu(c_in, c), *_conv_norm_relu(c, c))
                                     for c_in, c in zip(ins, self.widths))
        self.decoder = nn.ModuleList(nn.Sequential(*_conv_norm_relu(deep + skip, skip))
                                     for deep, skip in zip(self.widths[:0:-1], self.widths[-2::-1]))
        self.head = nn.Conv2d(self.widths[0], num_classes, 1)

    def forward(self, colour: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = (colour - COLOUR_MEAN) / COLOUR_STD
        skips = []
        for stage, block in enumerate(self.encoder):
            if stage:
                x = F.max_pool2d(x, 2, ceil_mode=True)
            x = block(x)
            skips.append(x)
        for block, skip in zip(self.decoder, skips[-2::-1]):
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = block(torch.cat([x, skip], dim=1))
        features = F.avg_pool2d(x, FEATURE_STRIDE, ceil_mode=True)
        return self.head(x), features

    @torch.no_grad()
    def segment(self, colour: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One image's (H, W, K) class probabilities (softmax of the logits) and (H', W', C) features,
        float32, from its (H, W, 3) uint8 colours."""
        logits, features = self(colour_batch(colour[None]))
        return (logits[0].softmax(0).permute(1, 2, 0).numpy(), features[0].permute(1, 2, 0).numpy())

    def spec(self) -> dict[str, Any]:
        """The plain values :func:`build_image_segmenter` rebuilds this network from."""
        return {"num_classes": self.num_classes, "widths": list(self.widths)}


def build_image_segmenter(spec: dict[str, Any]) -> ImageSegmenter:
    """The network described by ``spec`` (:meth:`ImageSegmenter.spec`)."""
    return ImageSegmenter(int(spec["num_classes"]), tuple(int(w) for w in spec["widths"]))
