import pytest
import timm
import torch
from mmpretrain.models.utils import resize_pos_embed
from mmpretrain.registry import MODELS

from densevit_mm.models import DenseViT

TIMM_TWIN = {'densevit-ti': 'vit_tiny_patch16_224', 'densevit-s': 'vit_small_patch16_224',
             'densevit-b': 'vit_base_patch16_224'}
WIDTH = {'densevit-debug': 192, 'densevit-ti': 192, 'densevit-s': 384, 'densevit-b': 768}
DEPTH = {'densevit-debug': 1, 'densevit-ti': 12, 'densevit-s': 12, 'densevit-b': 12}


@pytest.mark.parametrize('arch', sorted(TIMM_TWIN))
def test_parameter_count_equals_timm_vit_without_head(arch):
    ours = DenseViT(arch=arch)
    twin = timm.create_model(TIMM_TWIN[arch], pretrained=False, num_classes=0)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in twin.parameters())
    assert ours.embed_dims == WIDTH[arch] and ours.num_layers == DEPTH[arch]


@pytest.mark.parametrize('arch', sorted(WIDTH))
def test_cls_and_patch_shapes_and_every_parameter_gets_a_gradient(arch):
    model = MODELS.build(dict(type='DenseViT', arch=arch))
    model.init_weights()
    (cls_token, patch), = model(torch.randn(1, 3, 224, 224))
    assert cls_token.shape == (1, WIDTH[arch]) and patch.shape == (1, 196, WIDTH[arch])
    assert torch.isfinite(patch).all()
    (cls_token.sum() + patch.square().mean()).backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert missing == []


def test_featmaps_at_chosen_layers_and_other_input_sizes():
    model = DenseViT(arch='densevit-ti', out_type='featmap', out_indices=(3, 5, 7, 11))
    outs = model(torch.randn(1, 3, 256, 320))  # pos embed resized 14x14 -> 16x20 on the fly
    assert [tuple(o.shape) for o in outs] == [(1, 192, 16, 20)] * 4
    cls_token, = DenseViT(arch='densevit-debug', out_type='cls_token')(torch.randn(2, 3, 64, 64))
    assert cls_token.shape == (2, 192)


def test_loading_another_grid_resizes_the_position_embedding_and_round_trips():
    src = DenseViT(arch='densevit-debug', img_size=224)
    # A smooth position embedding (as trained ones are) survives 14 -> 28 -> 14.
    yy, xx = torch.meshgrid(torch.linspace(0, 1, 14), torch.linspace(0, 1, 14), indexing='ij')
    freqs = torch.linspace(0.5, 2, 192)
    grid = torch.sin(yy.reshape(-1, 1) * freqs) + torch.cos(xx.reshape(-1, 1) * freqs)  # (196, C)
    src.pos_embed.data = torch.cat([torch.randn(1, 192), grid]).unsqueeze(0)

    big = DenseViT(arch='densevit-debug', img_size=448)
    big.load_state_dict(src.state_dict())
    assert big.pos_embed.shape == (1, 1 + 28 * 28, 192)
    expected = resize_pos_embed(src.pos_embed.data, (14, 14), (28, 28), 'bicubic', 1)
    assert torch.equal(big.pos_embed.data, expected)
    assert torch.equal(big.pos_embed.data[:, 0], src.pos_embed.data[:, 0])  # CLS untouched

    back = DenseViT(arch='densevit-debug', img_size=224)
    back.load_state_dict(big.state_dict())
    # bicubic up then down is not exact: within 0.25% of the embedding range (about 2)
    torch.testing.assert_close(back.pos_embed.data, src.pos_embed.data, atol=5e-3, rtol=0)


def test_bad_arch_and_out_type_are_named():
    with pytest.raises(ValueError, match="Unknown DenseViT arch 'small'"):
        DenseViT(arch='small')
    with pytest.raises(ValueError, match="Unknown out_type 'tokens'"):
        DenseViT(arch='densevit-debug', out_type='tokens')


def windowed_reference(model, x, window):
    """ViTDet's windowed blocks written out one window at a time (zero padding after ln1)."""
    tokens, (H, W) = model.patch_embed(x)
    tokens = tokens + resize_pos_embed(model.pos_embed, model.patch_resolution, (H, W),
                                       'bicubic', 0)
    for i, layer in enumerate(model.layers):
        if i in model.global_attn_indexes:
            tokens = layer(tokens)
            continue
        normed = layer.ln1(tokens).reshape(1, H, W, -1)
        Hp, Wp = -(-H // window) * window, -(-W // window) * window
        padded = torch.zeros(1, Hp, Wp, normed.shape[-1])
        padded[:, :H, :W] = normed
        attn = torch.zeros_like(padded)
        for top in range(0, Hp, window):
            for left in range(0, Wp, window):
                win = padded[:, top:top + window, left:left + window].reshape(1, window ** 2, -1)
                attn[:, top:top + window, left:left + window] = layer.attn(win).reshape(
                    1, window, window, -1)
        tokens = tokens + attn[:, :H, :W].reshape(1, H * W, -1)
        tokens = layer.ffn(layer.ln2(tokens), identity=tokens)
    tokens = model.ln1(tokens)
    return tokens.reshape(1, H, W, -1).permute(0, 3, 1, 2)


def test_windowed_attention_equals_a_window_by_window_reference():
    model = DenseViT(arch='densevit-ti', with_cls_token=False, out_type='featmap',
                     window_size=3, global_attn_indexes=(2, 5, 8, 11))
    model.eval()
    x = torch.randn(1, 3, 112, 80)  # a 7 x 5 grid: padded to 9 x 6 windows of 3
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], windowed_reference(model, x, 3),
                                   atol=1e-5, rtol=1e-5)


def test_windowed_attention_has_the_same_weights_and_equals_global_when_one_window():
    windowed = DenseViT(arch='densevit-ti', with_cls_token=False, out_type='featmap',
                        window_size=10)
    plain = DenseViT(arch='densevit-ti', with_cls_token=False, out_type='featmap')
    assert windowed.state_dict().keys() == plain.state_dict().keys()
    plain.load_state_dict(windowed.state_dict())
    windowed.eval()
    plain.eval()
    x = torch.randn(1, 3, 160, 160)  # a 10 x 10 grid: one window, no padding
    with torch.no_grad():
        torch.testing.assert_close(windowed(x)[0], plain(x)[0])


def test_windowed_attention_settings_are_checked():
    with pytest.raises(ValueError, match='with_cls_token=False'):
        DenseViT(arch='densevit-debug', out_type='featmap', window_size=14)
    with pytest.raises(ValueError, match=r'global_attn_indexes \[3\]'):
        DenseViT(arch='densevit-debug', with_cls_token=False, out_type='featmap',
                 window_size=14, global_attn_indexes=(3,))


def test_frozen_stages_stay_deterministic_after_train():
    """A fully frozen backbone must not drop paths once the runner calls ``train()``."""
    torch.manual_seed(0)
    model = DenseViT(arch='densevit-debug', img_size=32, drop_path_rate=0.5, drop_rate=0.5,
                     frozen_stages=1, out_type='featmap')
    model.train()
    x = torch.randn(2, 3, 32, 32)
    first, second = model(x)[0], model(x)[0]
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    assert all(not p.requires_grad for p in model.parameters())
    # unfrozen, the same settings do drop paths in training
    model = DenseViT(arch='densevit-debug', img_size=32, drop_path_rate=0.5, drop_rate=0.5,
                     out_type='featmap').train()
    assert not torch.equal(model(x)[0], model(x)[0])


def test_sincos_position_embedding_is_fixed_and_survives_init_weights():
    from mmpretrain.models.utils import build_2d_sincos_position_embedding
    from mmpretrain.registry import MODELS
    backbone = MODELS.build(dict(type='DenseViT', arch='densevit-debug', img_size=96,
                                 pos_embed_type='sincos'))
    backbone.init_weights()
    expected = build_2d_sincos_position_embedding((6, 6), 192, cls_token=True)
    assert torch.equal(backbone.pos_embed, expected) and not backbone.pos_embed.requires_grad
    assert torch.equal(backbone.pos_embed[0, 0], torch.zeros(192))  # the CLS row
    learned = MODELS.build(dict(type='DenseViT', arch='densevit-debug', img_size=96))
    learned.init_weights()
    assert learned.pos_embed.requires_grad and not torch.equal(learned.pos_embed, expected)
    with pytest.raises(ValueError, match="pos_embed_type must be 'learned' or 'sincos'"):
        MODELS.build(dict(type='DenseViT', arch='densevit-debug', pos_embed_type='rope'))
