"""Layer-wise learning-rate decay for any model whose ``backbone`` is a DenseViT."""
from functools import partial
from typing import List

import torch.nn as nn
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS
from mmpretrain.engine.optimizers import LearningRateDecayOptimWrapperConstructor

from densevit_mm.models.backbones import DenseViT

# Registered in mmengine's root registry, so mmseg, mmdet and mmpretrain configs all find it.


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DenseViTLayerDecayOptimizerConstructor(LearningRateDecayOptimWrapperConstructor):
    """mmpretrain's layer-decay constructor, given ``model.backbone.get_layer_depth``.

    Kept because mmpretrain's asks the whole model for ``get_layer_depth``, which its
    classifiers have and mmseg's segmentors and mmdet's detectors do not.

    Each parameter's lr is scaled by ``layer_decay_rate ** (num_layers + 1 - layer_id)``,
    the layer id from the DenseViT block index (BEiT / MAE convention): patch embedding,
    CLS token and position embedding are layer 0, block ``i`` is ``i + 1``, and the final
    norm, necks and heads are layer ``num_layers + 1`` (full lr).  Weight decay follows
    mmpretrain's ``paramwise_cfg`` (the configs: ``flat_decay_mult=0.`` and ``custom_keys``
    with ``decay_mult=0.`` for ``.pos_embed`` and ``.cls_token``).

    ``paramwise_cfg``: ``layer_decay_rate`` in (0, 1] (e.g. 0.65 for ADE20K, 0.7 for COCO);
    ``num_layers``, if given, must agree with the backbone.
    """

    def add_params(self, params: List[dict], module: nn.Module, prefix: str = '',
                   get_layer_depth=None, **kwargs) -> None:
        if get_layer_depth is None:  # the top-level call; the recursion passes it on
            get_layer_depth = self._backbone_layer_depth(module)
        super().add_params(params, module, prefix, get_layer_depth, **kwargs)

    def _backbone_layer_depth(self, module: nn.Module):
        backbone = getattr(module, 'backbone', None)
        if not isinstance(backbone, DenseViT):
            raise TypeError('DenseViTLayerDecayOptimizerConstructor needs a model whose '
                            f'`backbone` is a DenseViT, got {type(backbone).__name__}')
        rate = self.paramwise_cfg.get('layer_decay_rate')
        if rate is None or not 0 < rate <= 1:
            raise ValueError('paramwise_cfg.layer_decay_rate must be in (0, 1], got '
                             f'{rate!r}')
        num_layers = self.paramwise_cfg.get('num_layers', backbone.num_layers)
        if num_layers != backbone.num_layers:
            raise ValueError(f'paramwise_cfg.num_layers={num_layers} but the backbone has '
                             f'{backbone.num_layers} layers')
        return partial(backbone.get_layer_depth, prefix='backbone.')
