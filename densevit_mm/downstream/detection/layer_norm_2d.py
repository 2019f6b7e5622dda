"""LayerNorm over the channels of a ``(B, C, H, W)`` map, as ViTDet uses in its heads."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmdet.registry import MODELS


@MODELS.register_module(name='LN2d')
class LayerNorm2d(nn.LayerNorm):
    """``nn.LayerNorm`` applied at every position of a channel-first feature map.

    Registered as ``'LN2d'`` so ``norm_cfg=dict(type='LN2d')`` works in mmdet configs.
    """

    _abbr_ = 'ln'

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.permute(0, 2, 3, 1)  # (B, H, W, C)
        x = F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W)
