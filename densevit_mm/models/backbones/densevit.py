"""The DenseViT backbone: a plain ViT that hands both its CLS token and its patch tokens on."""
import math
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from mmpretrain.models.backbones import VisionTransformer
from mmpretrain.models.utils import build_2d_sincos_position_embedding, resize_pos_embed
from mmpretrain.registry import MODELS


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
        window_size (int, optional): If set, every layer not in ``global_attn_indexes``
            attends within non-overlapping ``window_size`` x ``window_size`` windows of the
            patch grid (zero-padded), as ViTDet; the weights are the same as without.
            Needs ``with_cls_token=False`` and ``out_type='featmap'``. Defaults to None.
        global_attn_indexes (Sequence[int]): Layers that keep global attention when
            ``window_size`` is set (ViTDet: 2, 5, 8, 11). Defaults to ().
        stop_grad_conv1 (bool): Keep the patch projection at its random initialisation (no
            gradient), as MoCo v3 does in contrastive pretraining; same name as mmpretrain's
            ``MoCoV3ViT``.  On the built-in scenes a trained projection turns into a
            mean-colour detector (docs/builtin_benchmark.md).  Defaults to False.
        pos_embed_type (str): ``'learned'`` (DeiT, default) or ``'sincos'``: MoCo v3's fixed
            2-D sine-cosine position embedding (no gradient; a zero row for the CLS token).
            A transfer config loads either into a learned one.
        init_cfg (dict | list[dict], optional): Initialisation; defaults to the timm / DeiT
            scheme (truncated normal std 0.02 for linear layers, unit LayerNorm).
        **kwargs: Any other argument of mmpretrain's ``VisionTransformer``
            (``drop_path_rate``, ``final_norm``, ``frozen_stages``, ...).
    """

    # Ti / S / B are mmpretrain's DeiT settings; only the one-layer debug size is ours.
    arch_zoo = {
        'densevit-debug': dict(embed_dims=192, num_layers=1, num_heads=3,
                               feedforward_channels=4 * 192),
        **{f'densevit-{ours}': VisionTransformer.arch_zoo[f'deit-{deit}']
           for ours, deit in (('ti', 'tiny'), ('s', 'small'), ('b', 'base'))},
    }
    OUT_TYPES = VisionTransformer.OUT_TYPES | {'cls_and_patch'}

    def __init__(self,
                 arch: Union[str, dict] = 'densevit-s',
                 img_size: Union[int, Sequence[int]] = 224,
                 patch_size: int = 16,
                 out_type: str = 'cls_and_patch',
                 out_indices: Union[int, Sequence[int]] = -1,
                 window_size: Optional[int] = None,
                 global_attn_indexes: Sequence[int] = (),
                 stop_grad_conv1: bool = False,
                 pos_embed_type: str = 'learned',
                 init_cfg: Optional[Union[dict, list]] = None,
                 **kwargs) -> None:
        if isinstance(arch, str) and arch.lower() not in self.arch_zoo:
            raise ValueError(f'Unknown DenseViT arch {arch!r}; choose one of '
                             f'{sorted(self.arch_zoo)} or pass a dict.')
        if pos_embed_type not in ('learned', 'sincos'):
            raise ValueError("pos_embed_type must be 'learned' or 'sincos', got "
                             f'{pos_embed_type!r}')
        if out_type not in self.OUT_TYPES:
            raise ValueError(f'Unknown out_type {out_type!r}; choose one of '
                             f'{sorted(self.OUT_TYPES)}.')
        if window_size is not None:
            if window_size < 1:
                raise ValueError(f'window_size must be positive, got {window_size}')
            if kwargs.get('with_cls_token', True) or out_type != 'featmap':
                raise ValueError('windowed attention (ViTDet) works on the patch grid alone: '
                                 "set with_cls_token=False and out_type='featmap'")
        if init_cfg is None:
            init_cfg = [
                dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
                dict(type='Constant', layer='LayerNorm', val=1., bias=0.),
            ]
        if not isinstance(out_indices, int):
            out_indices = list(out_indices)  # the parent normalises it in place
        super().__init__(arch=arch, img_size=img_size, patch_size=patch_size,
                         out_type=out_type, out_indices=out_indices, init_cfg=init_cfg, **kwargs)
        bad = [i for i in global_attn_indexes if not 0 <= i < self.num_layers]
        if bad:
            raise ValueError(f'global_attn_indexes {bad} are not layers of this '
                             f'{self.num_layers}-layer DenseViT')
        self.patch_size = patch_size
        self.window_size = window_size
        self.global_attn_indexes = tuple(global_attn_indexes)
        if stop_grad_conv1:
            self.patch_embed.projection.requires_grad_(False)
        self.pos_embed_type = pos_embed_type
        if pos_embed_type == 'sincos':
            self.pos_embed.requires_grad_(False)
            self._set_sincos_pos_embed()

    @torch.no_grad()
    def _set_sincos_pos_embed(self) -> None:
        self.pos_embed.copy_(build_2d_sincos_position_embedding(
            self.patch_resolution, self.embed_dims,
            cls_token=self.num_extra_tokens == 1))  # (1, extra + N, C)

    def _prepare_pos_embed(self, state_dict, prefix, *args, **kwargs):
        # mmpretrain drops a checkpoint's CLS row only when the grids already agree; drop it
        # whenever this model has no CLS token (ViTDet style) before the grid is resized.
        name = prefix + 'pos_embed'
        if not self.with_cls_token and name in state_dict:
            rows = state_dict[name].shape[1]
            if math.isqrt(rows - 1) ** 2 == rows - 1:  # 1 + a square grid: has a CLS row
                state_dict[name] = state_dict[name][:, 1:]
        super()._prepare_pos_embed(state_dict, prefix, *args, **kwargs)

    def init_weights(self) -> None:
        """Initialise, or load ``init_cfg=dict(type='Pretrained', checkpoint=...)`` strictly.

        mmengine's ``Pretrained`` init loads with ``strict=False`` and only logs what did not
        match; a transfer run would then train from partly random weights without a word.
        Here every backbone key must be present and nothing unexpected may remain.  The
        checkpoint may be a DenseViT pretraining or backbone-only file, or a timm-layout ViT
        (DeiT, DINO, MAE, MoCo v3); the position embedding is resized to this grid.
        """
        cfg = self.init_cfg
        if not (isinstance(cfg, dict) and cfg.get('type') == 'Pretrained'):
            super().init_weights()
            if self.pos_embed_type == 'sincos':  # the parent draws it at random
                self._set_sincos_pos_embed()
            return
        from densevit_mm.checkpoint import load_densevit_state_dict
        from mmengine.logging import MMLogger
        checkpoint = cfg.get('checkpoint')
        if not checkpoint:
            raise ValueError('init_cfg Pretrained has no checkpoint: set '
                             'model.backbone.init_cfg.checkpoint=PATH (e.g. with --cfg-options)')
        state, report = load_densevit_state_dict(checkpoint, cfg.get('prefix'))
        if not self.with_cls_token:
            state.pop('cls_token', None)  # its position-embedding row is dropped on load
        try:
            missing, unexpected = self.load_state_dict(state, strict=False)
        except RuntimeError as err:  # shape mismatch: most often another arch
            raise RuntimeError(f'{checkpoint} does not fit this {self.embed_dims}-wide, '
                               f'{self.num_layers}-layer DenseViT: {err}') from err
        if missing or unexpected:
            raise RuntimeError(
                f'{checkpoint} does not match the DenseViT backbone: missing keys {missing}, '
                f'unexpected keys {unexpected}. Check the arch and the checkpoint '
                '(tools/convert_checkpoint.py shows what a file holds).')
        MMLogger.get_current_instance().info(
            f'DenseViT: loaded all {len(state)} backbone tensors from {checkpoint} '
            f'({report["format"]} layout, prefix {report["prefix"]!r}, '
            f'{len(report["dropped"])} non-backbone keys left out)')
        self._is_init = True

    def train(self, mode: bool = True) -> 'DenseViT':
        """Keep frozen stages in eval mode (no stochastic depth, no dropout) during training.

        mmpretrain's ViT puts frozen layers in eval mode once, at construction; the runner's
        ``model.train()`` then switches them back, so a frozen backbone still dropped paths
        and its features changed from one forward pass to the next.
        """
        super().train(mode)
        if mode and self.frozen_stages > 0:
            self._freeze_stages()
        return self

    def forward(self, x: torch.Tensor) -> tuple:
        if self.window_size is None:
            return super().forward(x)
        x, hw = self.patch_embed(x)  # (B, H*W, C), no CLS token in windowed mode
        x = x + resize_pos_embed(self.pos_embed, self.patch_resolution, hw,
                                 mode=self.interpolate_mode, num_extra_tokens=0)
        x = self.pre_norm(self.drop_after_pos(x))
        outs = []
        for i, layer in enumerate(self.layers):
            if i in self.global_attn_indexes:
                x = layer(x)
            else:
                x = x + self._window_attention(layer, layer.ln1(x), hw)
                x = layer.ffn(layer.ln2(x), identity=x)
            if i == len(self.layers) - 1 and self.final_norm:
                x = self.ln1(x)
            if i in self.out_indices:
                outs.append(self._format_output(x, hw))
        return tuple(outs)

    def _window_attention(self, layer, x: torch.Tensor, hw) -> torch.Tensor:
        """``layer.attn`` within windows of the (zero-padded) patch grid: ``(B, H*W, C)``."""
        B, _, C = x.shape
        H, W = hw
        w = self.window_size
        pad_h, pad_w = (-H) % w, (-W) % w
        x = F.pad(x.view(B, H, W, C), (0, 0, 0, pad_w, 0, pad_h))  # (B, Hp, Wp, C)
        Hp, Wp = H + pad_h, W + pad_w
        windows = x.view(B, Hp // w, w, Wp // w, w, C).transpose(2, 3)  # (B, h, v, w, w, C)
        out = layer.attn(windows.reshape(-1, w * w, C))  # (B*h*v, w*w, C)
        out = out.view(B, Hp // w, Wp // w, w, w, C).transpose(2, 3)  # (B, h, w, v, w, C)
        return out.reshape(B, Hp, Wp, C)[:, :H, :W].reshape(B, H * W, C)

    def _format_output(self, x: torch.Tensor, hw):
        if self.out_type == 'cls_and_patch':
            return x[:, 0], x[:, self.num_extra_tokens:]  # (B, C), (B, N, C)
        return super()._format_output(x, hw)
