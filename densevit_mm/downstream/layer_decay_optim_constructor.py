"""Layer-wise learning-rate decay for any model whose ``backbone`` is a DenseViT."""
from typing import List

import torch.nn as nn
from mmengine.optim import DefaultOptimWrapperConstructor
from mmengine.registry import OPTIM_WRAPPER_CONSTRUCTORS

from densevit_mm.models.backbones import DenseViT

# Registered in mmengine's root registry, so mmseg, mmdet and mmpretrain configs all find it.


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class DenseViTLayerDecayOptimizerConstructor(DefaultOptimWrapperConstructor):
    """Scale each parameter's lr by ``layer_decay_rate ** (num_layers + 1 - layer_id)``.

    The layer id comes from the DenseViT block index (BEiT / MAE convention): patch
    embedding, CLS token and position embedding are layer 0, block ``i`` is ``i + 1``, and
    the final norm, necks and heads are layer ``num_layers + 1`` (full lr).  mmseg's own
    ``LayerDecayOptimizerConstructor`` recognises only BEiT, MAE and ConvNeXt class names.

    Biases, norm weights (every 1-D parameter), ``pos_embed`` and ``cls_token`` get no weight
    decay.

    ``paramwise_cfg``: ``layer_decay_rate`` (e.g. 0.65 for ADE20K, 0.7 for COCO).  The number
    of layers is read from the backbone; a ``num_layers`` entry, if given, must agree.
    """

    def add_params(self, params: List[dict], module: nn.Module, **kwargs) -> None:
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

        groups = {}
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            # (layer id, num_layers + 2) with the id counted as described above
            layer_id, num_ids = backbone.get_layer_depth(name, prefix='backbone.')
            scale = rate ** (num_ids - 1 - layer_id)
            no_decay = param.ndim == 1 or name.endswith(('pos_embed', 'cls_token'))
            key = (layer_id, no_decay)
            if key not in groups:
                groups[key] = dict(params=[], param_names=[], lr=self.base_lr * scale,
                                   lr_scale=scale, layer_id=layer_id,
                                   weight_decay=0. if no_decay else self.base_wd)
            groups[key]['params'].append(param)
            groups[key]['param_names'].append(name)
        params.extend(groups[key] for key in sorted(groups))
