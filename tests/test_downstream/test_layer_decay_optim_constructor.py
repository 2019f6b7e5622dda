import pytest
import torch.nn as nn
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper

import densevit_mm.downstream  # noqa: F401  (registers the constructor)
from densevit_mm.models import DenseViT

CONFIGS = ['configs/segmentation/upernet_densevit-s_8xb2-160k_ade20k-512x512.py',
           'configs/detection/mask-rcnn_densevit-s_simplefpn_8xb2-1x_coco.py']


class Segmenter(nn.Module):
    """The shape of an mmseg / mmdet model: a ``backbone`` and heads beside it."""

    def __init__(self, frozen_stages=-1):
        super().__init__()
        self.backbone = DenseViT(arch='densevit-ti', out_type='featmap',
                                 frozen_stages=frozen_stages)
        self.neck = nn.Sequential(nn.Conv2d(192, 8, 1), nn.LayerNorm(8))
        self.decode_head = nn.Conv2d(8, 5, 1)


def config_optim_wrapper(path):
    """The config's optim_wrapper, with a plain OptimWrapper (the guard is not tested here)."""
    cfg = Config.fromfile(path).optim_wrapper.to_dict()
    cfg.pop('_delete_', None)
    return dict(cfg, type='OptimWrapper')


def build(model, rate=0.65, **paramwise):
    cfg = config_optim_wrapper(CONFIGS[0])
    cfg['optimizer'].update(lr=1e-4, weight_decay=0.05)
    cfg['paramwise_cfg'].update(layer_decay_rate=rate, **paramwise)
    return build_optim_wrapper(model, cfg)


def group_of(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in optimizer.param_groups for p in g['params']}


def reference_settings(model, lr, wd, rate):
    """Per parameter (lr, lr_scale, layer id, weight decay) as our own constructor set them
    before it handed the grouping to mmpretrain's: BEiT / MAE layer ids, no weight decay on
    1-D parameters, ``pos_embed`` and ``cls_token``."""
    num_layers = model.backbone.num_layers
    settings = {}
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        if name in ('backbone.cls_token', 'backbone.pos_embed') or \
                name.startswith('backbone.patch_embed'):
            layer_id = 0
        elif name.startswith('backbone.layers.'):
            layer_id = int(name.split('.')[2]) + 1
        else:
            layer_id = num_layers + 1
        scale = rate ** (num_layers + 1 - layer_id)
        no_decay = param.ndim == 1 or name.endswith(('pos_embed', 'cls_token'))
        settings[name] = (lr * scale, scale, layer_id, 0. if no_decay else wd)
    return settings


@pytest.mark.parametrize('path', CONFIGS)
def test_the_configs_give_every_parameter_the_lr_and_weight_decay_of_the_reference(path):
    cfg = config_optim_wrapper(path)
    model = Segmenter(frozen_stages=2)
    groups = group_of(build_optim_wrapper(model, cfg).optimizer, model)
    expected = reference_settings(model, cfg['optimizer']['lr'],
                                  cfg['optimizer']['weight_decay'],
                                  cfg['paramwise_cfg']['layer_decay_rate'])
    got = {name: (g['lr'], g['lr_scale'], g['layer_id'], g['weight_decay'])
           for name, g in groups.items()}
    assert got == expected


def test_lr_scale_follows_the_block_index():
    model = Segmenter()
    groups = group_of(build(model, num_layers=12).optimizer, model)
    expected_id = {'backbone.cls_token': 0, 'backbone.pos_embed': 0,
                   'backbone.patch_embed.projection.weight': 0,
                   'backbone.layers.0.attn.qkv.weight': 1, 'backbone.layers.5.ln1.weight': 6,
                   'backbone.layers.11.ffn.layers.1.weight': 12, 'backbone.ln1.weight': 13,
                   'decode_head.weight': 13}
    for name, layer_id in expected_id.items():
        assert groups[name]['lr'] == pytest.approx(1e-4 * 0.65 ** (13 - layer_id)), name
    # each trainable parameter is in exactly one group
    counted = [p for g in build(model).optimizer.param_groups for p in g['params']]
    assert len(counted) == len(set(map(id, counted))) == len(list(model.parameters()))


def test_no_weight_decay_on_norms_biases_and_tokens():
    model = Segmenter()
    groups = group_of(build(model).optimizer, model)
    for name in ('backbone.cls_token', 'backbone.pos_embed', 'backbone.layers.3.ln2.bias',
                 'backbone.layers.3.attn.qkv.bias', 'decode_head.bias', 'backbone.ln1.weight',
                 'neck.1.weight'):
        assert groups[name]['weight_decay'] == 0., name
    for name in ('backbone.layers.3.attn.qkv.weight', 'backbone.patch_embed.projection.weight',
                 'decode_head.weight', 'neck.0.weight'):
        assert groups[name]['weight_decay'] == 0.05, name


def test_frozen_parameters_are_left_out():
    model = Segmenter(frozen_stages=2)
    groups = group_of(build(model).optimizer, model)
    assert 'backbone.layers.1.attn.qkv.weight' not in groups
    assert 'backbone.layers.2.attn.qkv.weight' in groups


def test_bad_settings_are_named():
    with pytest.raises(ValueError, match='num_layers=24 but the backbone has 12'):
        build(Segmenter(), num_layers=24)
    with pytest.raises(ValueError, match='layer_decay_rate must be in'):
        build(Segmenter(), rate=1.5)
    model = nn.Module()
    model.backbone = nn.Linear(2, 2)
    with pytest.raises(TypeError, match='`backbone` is a DenseViT'):
        build(model)
