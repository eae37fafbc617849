"""VGG16 feature extractor with torchvision's parameter names (`features.<i>.weight`).

Weights: torchvision's ImageNet `vgg16-397923af.pth` loads as is (`classifier.*` ignored).
Feature extraction follows HSNet's `extract_feat_vgg` with feat_ids [17,19,21,24,26,28,30]:
pre-ReLU conv4_1, conv4_2, conv4_3 (512 ch, S/8), conv5_1, conv5_2, conv5_3 (512 ch, S/16), and
pool5 (512 ch, S/32 floored).
"""

from __future__ import annotations

import torch
from torch import nn

# torchvision cfg "D": channel counts, "M" = 2x2 max-pool.
_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M")
VGG16_FEAT_IDS = (17, 19, 21, 24, 26, 28, 30)


class VGG16(nn.Module):
    """torchvision-compatible VGG16 `features` trunk (classifier not built)."""

    n_feats = 7
    channels = (512,) * 7

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = []
        cin = 3
        for v in _CFG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                # not inplace: the pre-ReLU conv outputs are returned as features
                layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU()]
                cin = v
        self.features = nn.Sequential(*layers)

    def extract_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """HSNet VGG feature pyramid.

        Args:
            image: (B,3,S,S) float32, ImageNet-normalised.

        Returns:
            7 float32 tensors (B,512,·,·): 3 at S/8, 3 at S/16, 1 at floor(S/32).
        """
        feats = []
        x = image
        last = VGG16_FEAT_IDS[-1]
        for i, layer in enumerate(self.features):
            x = layer(x)
            if i in VGG16_FEAT_IDS:
                feats.append(x)
            if i == last:
                break
        return feats
