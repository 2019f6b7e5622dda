"""Projection heads of DenseViT: one on the CLS token, one on every patch token."""
from typing import List, Optional, Sequence, Tuple, Union

import torch
import torch.nn as nn
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS


def _mlp(in_channels: int, hid_channels: int, out_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(in_channels, hid_channels), nn.ReLU(inplace=True),
        nn.Linear(hid_channels, out_channels))


@MODELS.register_module()
class DenseProjectionNeck(BaseModule):
    """Global and dense projections in parallel (DenseCL's neck, for tokens).

    The global branch maps the CLS token through ``in -> hid -> out`` (MoCo v2's MLP); the
    dense branch applies ``in -> hid -> dense_out`` to every patch token independently,
    which is DenseCL's 1x1-conv head on a ``14 x 14`` grid for a 224 input.

    Args:
        in_channels (int): Backbone width.
        hid_channels (int): Hidden width of both MLPs. Defaults to 2048.
        out_channels (int): Global projection dimension. Defaults to 128.
        dense_out_channels (int, optional): Dense projection dimension; ``None`` builds no
            dense branch (the global-only baseline). Defaults to 128.
        init_cfg (dict | list[dict], optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 in_channels: int,
                 hid_channels: int = 2048,
                 out_channels: int = 128,
                 dense_out_channels: Optional[int] = 128,
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.global_mlp = _mlp(in_channels, hid_channels, out_channels)
        self.dense_mlp = None if dense_out_channels is None else _mlp(
            in_channels, hid_channels, dense_out_channels)

    def forward(self, x: Sequence[Tuple[torch.Tensor, torch.Tensor]]
                ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Project the last backbone output ``(cls (B, C), patch (B, N, C))``.

        Returns:
            tuple: ``global (B, out)``, ``dense (B, N, dense_out)`` and ``pooled
            (B, dense_out)``, the mean of the dense projections over N that DenseCL
            enqueues (normalised by the loss); both ``None`` without a dense branch.
        """
        cls_token, patch_tokens = x[-1]
        global_proj = self.global_mlp(cls_token)  # (B, out)
        if self.dense_mlp is None:
            return global_proj, None, None
        dense_proj = self.dense_mlp(patch_tokens)  # (B, N, dense_out)
        return global_proj, dense_proj, dense_proj.mean(dim=1)
