import pytest
import torch
import torch.nn as nn
from mmengine.optim import build_optim_wrapper

import densevit_mm.downstream  # noqa: F401  (registers the constructor)
from densevit_mm.models import DenseViT


class Segmenter(nn.Module):
    """The shape of an mmseg / mmdet model: a ``backbone`` and heads beside it."""

    def __init__(self, frozen_stages=-1):
        super().__init__()
        self.backbone = DenseViT(arch='densevit-ti', out_type='featmap',
                                 frozen_stages=frozen_stages)
        self.decode_head = nn.Conv2d(192, 5, 1)


def build(model, rate=0.65, **paramwise):
    return build_optim_wrapper(model, dict(
        type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-4, weight_decay=0.05),
        constructor='DenseViTLayerDecayOptimizerConstructor',
        paramwise_cfg=dict(layer_decay_rate=rate, **paramwise)))


def group_of(optimizer, model):
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)]: g for g in optimizer.param_groups for p in g['params']}


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
                 'backbone.layers.3.attn.qkv.bias', 'decode_head.bias', 'backbone.ln1.weight'):
        assert groups[name]['weight_decay'] == 0., name
    for name in ('backbone.layers.3.attn.qkv.weight', 'backbone.patch_embed.projection.weight',
                 'decode_head.weight'):
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
