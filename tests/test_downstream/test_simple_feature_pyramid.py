import torch
import torch.nn as nn
from mmcv.cnn import build_norm_layer
from mmengine.registry import DefaultScope

from densevit_mm.downstream.detection import SimpleFeaturePyramid


def test_the_configs_ln2d_is_mmpretrains_and_matches_channels_last_layer_norm_exactly():
    """The detection configs' ``norm_cfg``, built as mmdet builds it, is mmpretrain's
    LayerNorm2d (named ``ln`` in state dicts, as our own copy was) and gives bit for bit the
    channels-last ``F.layer_norm`` of our former class."""
    from mmpretrain.models.utils import LayerNorm2d
    with DefaultScope.overwrite_default_scope('mmdet'):
        name, norm = build_norm_layer(dict(type='mmpretrain.LN2d', requires_grad=True, eps=1e-6),
                                      6)
    assert type(norm) is LayerNorm2d and name == 'ln'
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 6, 5, 7)
    reference = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias,
                                         1e-6).permute(0, 3, 1, 2)  # (B, C, H, W)
    torch.testing.assert_close(norm(x), reference, rtol=0, atol=0)


def test_pyramid_strides_and_widths():
    neck = SimpleFeaturePyramid(in_channels=192, out_channels=32, num_outs=5)
    feat = torch.randn(2, 192, 8, 12)  # stride 16 of a 128 x 192 image
    outs = neck((feat,))
    assert [tuple(o.shape) for o in outs] == [
        (2, 32, 32, 48), (2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())
