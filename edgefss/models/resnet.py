"""ResNet-50 feature extractor with torchvision's parameter names (torchvision itself is not a dependency).

Weights: torchvision's ImageNet `resnet50-19c8e357.pth` loads as is (its `fc.*` keys are ignored,
its missing `num_batches_tracked` buffers are tolerated by `load_torchvision_backbone`).
Architecture: torchvision's "ResNet-50 v1.5" (the stride sits on the 3x3 conv of a bottleneck).

Feature extraction follows HSNet's `extract_feat_res` (feat ids 4..16): the 13 bottleneck outputs
of layer2..layer4 taken after the residual add and BEFORE the block's final ReLU:
idx 0-3 layer2 (512 ch, S/8), idx 4-9 layer3 (1024 ch, S/16), idx 10-12 layer4 (2048 ch, ~S/32).
"""

from __future__ import annotations

import torch
from torch import nn

# Bottleneck counts of layer1..layer4 (ResNet-50).
RESNET50_BLOCKS = (3, 4, 6, 3)


class Bottleneck(nn.Module):
    """torchvision Bottleneck (expansion 4) whose forward returns the pre-ReLU sum."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None):
        super().__init__()
        width = planes
        self.conv1 = nn.Conv2d(inplanes, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, planes * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU()
        self.downsample = downsample

    def forward_pre_relu(self, x: torch.Tensor) -> torch.Tensor:
        """(B,Cin,H,W) float32 -> (B,4*planes,H/stride,W/stride), residual added, no final ReLU."""
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return out + identity

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.forward_pre_relu(x))


class ResNet50(nn.Module):
    """torchvision-compatible ResNet-50 trunk (no avgpool/fc: they are not used for features)."""

    n_feats = 13
    channels = (512,) * 4 + (1024,) * 6 + (2048,) * 3

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = 64
        for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), RESNET50_BLOCKS, (1, 2, 2, 2))):
            downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes * 4, 1, stride=stride, bias=False), nn.BatchNorm2d(planes * 4)
            )
            blocks = [Bottleneck(inplanes, planes, stride, downsample)]
            blocks += [Bottleneck(planes * 4, planes) for _ in range(n - 1)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes * 4

    def extract_features(self, image: torch.Tensor) -> list[torch.Tensor]:
        """HSNet feature pyramid.

        Args:
            image: (B,3,S,S) float32, ImageNet-normalised.

        Returns:
            13 float32 tensors: 4 x (B,512,S/8,S/8), 6 x (B,1024,S/16,S/16), 3 x (B,2048,h4,h4),
            h4 = ceil(S/32) (13 at S=400). Pre-ReLU bottleneck outputs.
        """
        x = self.maxpool(self.relu(self.bn1(self.conv1(image))))
        x = self.layer1(x)
        feats = []
        for layer in (self.layer2, self.layer3, self.layer4):
            for block in layer:
                pre = block.forward_pre_relu(x)
                feats.append(pre)
                x = torch.relu(pre)
        return feats
