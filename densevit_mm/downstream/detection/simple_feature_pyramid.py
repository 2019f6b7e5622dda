"""ViTDet's simple feature pyramid: strides 4-64 from one stride-16 ViT map."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmcv.cnn import ConvModule, build_norm_layer
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from mmpretrain.models.utils import LayerNorm2d


@MODELS.register_module()
class SimpleFeaturePyramid(BaseModule):
    """The plain-backbone pyramid of ViTDet (Li et al., ECCV 2022).

    From the last ViT map (stride 16, ``in_channels`` wide) it makes stride 4 (two 2x
    transposed convs with LN-2d and GELU between them, ending ``in_channels / 4`` wide),
    stride 8 (one transposed conv, ``in_channels / 2``), stride 16 (as is) and stride 32
    (2x2 max-pool); each then goes through a 1x1 and a 3x3 conv to ``out_channels`` with a
    norm.  A fifth level, stride 64, is a stride-2 subsampling of the last, for the RPN.

    Args:
        in_channels (int): Width of the ViT map.
        out_channels (int): Width of every pyramid level. Defaults to 256.
        num_outs (int): 4 or 5 levels. Defaults to 5.
        norm_cfg (dict): Norm of the convs. Defaults to mmpretrain's LN-2d
            (``'mmpretrain.LN2d'`` in mmdet configs).
        init_cfg (dict | list[dict], optional): Initialisation config.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int = 256,
                 num_outs: int = 5,
                 norm_cfg: dict = dict(type=LayerNorm2d, requires_grad=True),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        if num_outs not in (4, 5):
            raise ValueError(f'num_outs must be 4 or 5, got {num_outs}')
        if in_channels % 4:
            raise ValueError(f'in_channels must be divisible by 4, got {in_channels}')
        self.num_outs = num_outs
        c = in_channels
        self.rescales = nn.ModuleList([
            nn.Sequential(
                nn.ConvTranspose2d(c, c // 2, 2, stride=2),
                build_norm_layer(norm_cfg, c // 2)[1],
                nn.GELU(),
                nn.ConvTranspose2d(c // 2, c // 4, 2, stride=2)),
            nn.ConvTranspose2d(c, c // 2, 2, stride=2),
            nn.Identity(),
            nn.MaxPool2d(2, stride=2),
        ])
        widths = (c // 4, c // 2, c, c)
        self.lateral_convs = nn.ModuleList(
            ConvModule(w, out_channels, 1, norm_cfg=norm_cfg, act_cfg=None) for w in widths)
        self.output_convs = nn.ModuleList(
            ConvModule(out_channels, out_channels, 3, padding=1, norm_cfg=norm_cfg,
                       act_cfg=None) for _ in widths)

    def forward(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, ...]:
        """``inputs``: the backbone outputs; the last one, ``(B, C, H/16, W/16)``, is used."""
        x = inputs[-1]
        outs = [output(lateral(rescale(x))) for rescale, lateral, output in
                zip(self.rescales, self.lateral_convs, self.output_convs)]
        if self.num_outs == 5:
            outs.append(F.max_pool2d(outs[-1], kernel_size=1, stride=2))  # stride 64
        return tuple(outs)
