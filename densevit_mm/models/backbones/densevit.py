"""The DenseViT backbone: a plain ViT that hands both its CLS token and its patch tokens on."""
from typing import Optional, Sequence, Union

import torch
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.registry import MODELS


def _arch(embed_dims: int, num_layers: int, num_heads: int) -> dict:
    return dict(embed_dims=embed_dims, num_layers=num_layers, num_heads=num_heads,
                feedforward_channels=4 * embed_dims)


@MODELS.register_module()
class DenseViT(VisionTransformer):
    """Vision Transformer for dense contrastive pretraining and dense transfer.

    mmpretrain's ``VisionTransformer`` with the sizes of DeiT / timm (its own ``'small'``
    arch is 768 wide and 8 deep, not ViT-S) and one more output type:

    - ``out_type='cls_and_patch'`` (pretraining): each selected layer gives a pair
      ``(cls (B, C), patch (B, N, C))``.
    - ``out_type='featmap'`` (segmentation / detection): each selected layer gives
      ``(B, C, H/16, W/16)``; ``'cls_token'`` gives ``(B, C)`` for linear probing.

    The position embedding is resized (bicubic) when a checkpoint of another grid is loaded
    and when the input size differs from ``img_size``.

    Args:
        arch (str | dict): ``'densevit-debug'`` (192 wide, 1 layer, 3 heads, for tests),
            ``'densevit-ti'`` (192/12/3), ``'densevit-s'`` (384/12/6), ``'densevit-b'``
            (768/12/12), or a dict with ``embed_dims``, ``num_layers``, ``num_heads``,
            ``feedforward_channels``. Defaults to ``'densevit-s'``.
        img_size (int | tuple): Input size the position embedding is made for.
            Defaults to 224.
        patch_size (int): Patch size. Defaults to 16.
        out_type (str): ``'cls_and_patch'``, ``'featmap'``, ``'cls_token'``, ``'raw'`` or
            ``'avg_featmap'``. Defaults to ``'cls_and_patch'``.
        out_indices (int | Sequence[int]): Layers whose output is returned (negative counts
            from the end). Defaults to -1.
        init_cfg (dict | list[dict], optional): Initialisation; defaults to the timm / DeiT
            scheme (truncated normal std 0.02 for linear layers, unit LayerNorm).
        **kwargs: Any other argument of mmpretrain's ``VisionTransformer``
            (``drop_path_rate``, ``final_norm``, ``frozen_stages``, ...).
    """

    arch_zoo = {
        'densevit-debug': _arch(192, 1, 3),
        'densevit-ti': _arch(192, 12, 3),
        'densevit-s': _arch(384, 12, 6),
        'densevit-b': _arch(768, 12, 12),
    }
    OUT_TYPES = VisionTransformer.OUT_TYPES | {'cls_and_patch'}

    def __init__(self,
                 arch: Union[str, dict] = 'densevit-s',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 out_type: str = 'cls_and_patch',
                 out_indices: Union[int, Sequence[int]] = -1,
                 init_cfg: Optional[Union[dict, list]] = None,
                 **kwargs) -> None:
        if isinstance(arch, str) and arch.lower() not in self.arch_zoo:
            raise ValueError(f'Unknown DenseViT arch {arch!r}; choose one of '
                             f'{sorted(self.arch_zoo)} or pass a dict.')
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'Unknown out_type {out_type!r}; choose one of '
                             f'{sorted(self.OUT_TYPES)}.')
        if init_cfg is None:
            init_cfg = [
                dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
                dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
            ]
        if not isinstance(out_indices, int):
            out_indices = list(out_indices)  # the parent normalises it in place
        super().__init__(arch=arch, img_size=img_size, patch_size=patch_size,
                         out_type=out_type, out_indices=out_indices, init_cfg=init_cfg, **kwargs)

    def _format_output(self, x: torch.Tensor, hw):
        if self.out_type == 'cls_and_patch':
            return x[:, 0], x[:, self.num_extra_tokens:]  # (B, C), (B, N, C)
        return super()._format_output(x, hw)
