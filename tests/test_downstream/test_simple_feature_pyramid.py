import torch
import torch.nn as nn

from densevit_mm.downstream.detection import LayerNorm2d, SimpleFeaturePyramid


def test_layer_norm_2d_normalises_channels_at_each_position():
    norm = LayerNorm2d(6, eps=1e-6)
    nn.init.normal_(norm.weight)
    nn.init.normal_(norm.bias)
    x = torch.randn(2, 6, 5, 7)
    reference = nn.functional.layer_norm(x.permute(0, 2, 3, 1), (6,), norm.weight, norm.bias,
                                         1e-6).permute(0, 3, 1, 2)
    torch.testing.assert_close(norm(x), reference)


def test_pyramid_strides_and_widths():
    neck = SimpleFeaturePyramid(in_channels=192, out_channels=32, num_outs=5)
    feat = torch.randn(2, 192, 8, 12)  # stride 16 of a 128 x 192 image
    outs = neck((feat,))
    assert [tuple(o.shape) for o in outs] == [
        (2, 32, 32, 48), (2, 32, 16, 24), (2, 32, 8, 12), (2, 32, 4, 6), (2, 32, 2, 3)]
    sum(o.mean() for o in outs).backward()
    assert all(p.grad is not None for p in neck.parameters())
