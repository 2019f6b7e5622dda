"""MoCo v3 and MAE, mmpretrain's own algorithms, as peer pretrainings of the built-in benchmark:
their configs build mmpretrain's classes with the recipes' numbers, take the benchmark's
overrides, train through ``python -m densevit_mm.train``, and their checkpoints load into the
backbone of every built-in transfer config."""
import json
import math
import os.path as osp
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import init_default_scope
from mmpretrain.models import MAE, MAEViT, MoCoV3, MoCoV3ViT
from mmpretrain.registry import MODELS

from densevit_mm.checkpoint import load_densevit_state_dict
from densevit_mm.datasets import write_image_folder
from densevit_mm.train import merge_args, parse_args
from tests.conftest import REPO_ROOT

PEERS = {
    'mocov3': ('configs/builtin/mocov3-mini_pretrain_builtin.py', MoCoV3, MoCoV3ViT),
    'mae': ('configs/builtin/mae-mini_pretrain_builtin.py', MAE, MAEViT),
}
DENSEVIT = 'configs/builtin/densevit-mini_pretrain_builtin.py'
# transfer config -> backbone tensors it loads: 4 layers x 12, the patch projection's 2, the
# final norm's 2, pos_embed and cls_token (Mask R-CNN's ViTDet backbone has no CLS token)
TRANSFER = {
    'configs/builtin/linear_densevit-mini_builtin-seg.py': 54,
    'configs/builtin/fpn-frozen_densevit-mini_builtin-seg.py': 54,
    'configs/builtin/fpn_densevit-mini_builtin-seg.py': 54,
    'configs/builtin/mask-rcnn_densevit-mini_builtin-det.py': 53,
}
# what tools/run_benchmark.py passes a pretraining of 8 epochs
BENCHMARK_OPTIONS = ['train_dataloader.dataset.data_root=/data/builtin', 'train_cfg.max_epochs=8',
                     'default_hooks.checkpoint.interval=8', 'param_scheduler.1.T_max=7',
                     'param_scheduler.1.end=8']
# the peers train with DenseViT's lr for the built-in schedule (the recipes' rule, 1.5e-4 per
# 256 images, left them at the probe's floor over 256 steps: their configs' headers)
BENCHMARK_LR = Config.fromfile(
    'configs/builtin/densevit-mini_pretrain_builtin.py').optim_wrapper.optimizer.lr


def build(name):
    cfg = Config.fromfile(PEERS[name][0])
    init_default_scope('mmpretrain')
    return cfg, MODELS.build(cfg.model)


def vit_params(width, depth, tokens):
    """A ViT with 16 px patches, MLP ratio 4 and a final norm, no head."""
    block = 12 * width * width + 13 * width
    return 3 * 256 * width + width + width + tokens * width + depth * block + 2 * width


@pytest.mark.parametrize('name', sorted(PEERS))
def test_config_builds_mmpretrains_own_classes(name):
    cfg, model = build(name)
    _, algorithm, backbone = PEERS[name]
    assert type(model) is algorithm and type(model.backbone) is backbone
    assert (model.backbone.embed_dims, model.backbone.num_layers) == (192, 4)
    assert model.backbone.layers[0].attn.num_heads == 3
    assert model.backbone.layers[0].ffn.feedforward_channels == 768
    assert model.backbone.pos_embed.shape == (1, 37, 192)  # 96 px: 6 x 6 patches + CLS
    assert sum(p.numel() for p in model.backbone.parameters()) == vit_params(192, 4, 37)


def test_data_loader_is_densevits():
    ours = Config.fromfile(DENSEVIT).train_dataloader
    for name in PEERS:
        loader = Config.fromfile(PEERS[name][0]).train_dataloader
        for key in ('batch_size', 'num_workers', 'persistent_workers', 'drop_last', 'pin_memory',
                    'sampler', 'collate_fn'):
            assert loader[key] == ours[key], (name, key)
        for key in ('type', 'data_root', 'data_prefix', 'skip_unreadable'):
            assert loader.dataset[key] == ours.dataset[key], (name, key)
        assert loader.batch_size == 64


@pytest.mark.parametrize('name', sorted(PEERS))
def test_benchmark_overrides_set_the_schedule(name):
    cfg = merge_args(Config.fromfile(PEERS[name][0]),
                     parse_args([PEERS[name][0], '--cfg-options', *BENCHMARK_OPTIONS]))
    warmup, cosine = cfg.param_scheduler
    assert (warmup.type, warmup.begin, warmup.end, warmup.start_factor) == (
        'LinearLR', 0, 1, 1e-4)
    assert (cosine.type, cosine.begin, cosine.end, cosine.T_max, cosine.eta_min) == (
        'CosineAnnealingLR', 1, 8, 7, 0.)
    assert warmup.convert_to_iter_based and cosine.convert_to_iter_based
    assert cfg.train_cfg.max_epochs == 8 and cfg.default_hooks.checkpoint.interval == 8
    quick = merge_args(Config.fromfile(PEERS[name][0]), parse_args([
        PEERS[name][0], '--cfg-options', 'train_cfg.max_epochs=1',
        'train_dataloader.batch_size=8']))
    assert quick.train_dataloader.batch_size == 8 and quick.train_cfg.max_epochs == 1


def test_mocov3_recipe_values():
    cfg, model = build('mocov3')
    optimizer = cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.type == 'OptimWrapper' and 'paramwise_cfg' not in cfg.optim_wrapper
    assert optimizer.type == 'AdamW' and optimizer.lr == BENCHMARK_LR == 1e-3
    assert optimizer.betas == (0.9, 0.999) and optimizer.weight_decay == 0.1
    assert model.head.temperature == 0.2 and model.head.loss_module.loss_weight == 0.4
    # key encoder: online weight 0.01 -> 0 (m = 0.99 -> 1) on a cosine over the run
    assert model.momentum_encoder.momentum == 0.01
    assert model.momentum_encoder.end_momentum == 0.
    assert not model.backbone.patch_embed.projection.weight.requires_grad  # stop_grad_conv1
    # projection 192 -> 1024 -> 1024 -> 256 (BN after each, the last without affine), predictor
    # 256 -> 1024 -> 256; the key encoder copies backbone and projection
    projection = 192 * 1024 + 2 * 1024 + 1024 * 1024 + 2 * 1024 + 1024 * 256
    predictor = 256 * 1024 + 2 * 1024 + 1024 * 256
    backbone = vit_params(192, 4, 37)
    assert sum(p.numel() for p in model.parameters()) == \
        2 * (backbone + projection) + predictor
    views = cfg.train_dataloader.dataset.pipeline[1].transforms
    for view, blur, solarize in zip(views, (1., 0.1), (0., 0.2)):
        assert (view[0].scale, view[0].crop_ratio_range) == (96, (0.08, 1.))
        assert view[1].transforms[0].saturation == 0.2 and view[1].prob == 0.8
        assert view[3].type == 'GaussianBlur' and view[3].prob == blur
        assert view[4].type == 'Solarize' and view[4].prob == solarize


def test_mocov3_chance_level_is_two_temperature_ln_batch_per_term():
    """Identical keys: every query scores all 64 alike, as a model that learned nothing."""
    _, model = build('mocov3')
    model.train()
    term = model.head.loss(torch.randn(64, 256), torch.ones(64, 256))
    assert term.item() == pytest.approx(2 * 0.2 * math.log(64), rel=1e-6)  # 1.664; loss: 3.327


def test_mae_recipe_values():
    cfg, model = build('mae')
    optimizer = cfg.optim_wrapper.optimizer
    assert cfg.optim_wrapper.type == 'OptimWrapper'
    assert optimizer.type == 'AdamW' and optimizer.lr == BENCHMARK_LR == 1e-3
    assert optimizer.betas == (0.9, 0.95) and optimizer.weight_decay == 0.05
    assert model.backbone.mask_ratio == 0.75 and model.head.norm_pix
    assert cfg.model.head.loss.criterion == 'L2'
    decoder = model.neck
    assert decoder.num_patches == 36 and decoder.mask_token.shape == (1, 1, 128)
    assert len(decoder.decoder_blocks) == 3
    assert decoder.decoder_blocks[0].attn.num_heads == 4
    assert decoder.decoder_pred.out_features == 16 * 16 * 3
    # 9 of the 36 patches stay visible, and the CLS token
    latent, mask, _ = model.backbone(torch.randn(2, 3, 96, 96))
    assert latent.shape == (2, 10, 192) and mask.sum(1).tolist() == [27., 27.]
    # no weight decay on norms, biases, position embeddings, mask and CLS tokens
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    decay = {id(p): g['weight_decay'] for g in wrapper.optimizer.param_groups for p in g['params']}
    for key, param in model.named_parameters():
        if not param.requires_grad:
            continue
        free = any(s in key for s in ('ln', 'bias', 'pos_embed', 'mask_token', 'cls_token'))
        assert decay[id(param)] == (0. if free else 0.05), key
    pipeline = cfg.train_dataloader.dataset.pipeline
    assert [t.type for t in pipeline] == ['LoadImageFromFile', 'RandomResizedCrop', 'RandomFlip',
                                          'PackInputs']
    assert (pipeline[1].scale, pipeline[1].crop_ratio_range) == (96, (0.2, 1.))


def test_mae_chance_level_is_one_on_textured_patches_and_zero_on_flat_ones():
    _, model = build('mae')
    mask = torch.ones(1, 36)
    textured = model.head.loss(torch.zeros(1, 36, 768), torch.randn(1, 3, 96, 96) * 10, mask)
    assert textured.item() == pytest.approx(767 / 768, rel=1e-5)
    flat = model.head.loss(torch.zeros(1, 36, 768), torch.full((1, 3, 96, 96), 0.3), mask)
    assert flat.item() == 0.


@pytest.fixture(scope='module', params=sorted(PEERS))
def trained(request, tmp_path_factory):
    """One epoch (8 images, batch 4: two steps) through ``python -m densevit_mm.train``, as
    tools/run_benchmark.py runs a pretraining; MoCo v3's MLPs 64 wide to keep it small."""
    name = request.param
    root = tmp_path_factory.mktemp(f'peer_{name}')
    write_image_folder(str(root / 'data' / 'pretrain'), num_images=8, size=128, seed=0)
    work_dir = root / 'work'
    options = [f'train_dataloader.dataset.data_root={root / "data"}', 'train_cfg.max_epochs=1',
               'default_hooks.checkpoint.interval=1', 'train_dataloader.batch_size=4',
               'default_hooks.logger.interval=1']
    if name == 'mocov3':
        options += ['model.neck.hid_channels=64', 'model.head.predictor.hid_channels=64']
    result = subprocess.run(
        [sys.executable, '-m', 'densevit_mm.train', PEERS[name][0], '--work-dir', str(work_dir),
         '--cfg-options', *options], cwd=REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    logs = sorted(work_dir.glob('*/vis_data/scalars.json'))
    assert len(logs) == 1
    with open(logs[0]) as f:
        scalars = [json.loads(line) for line in f]
    return name, str(work_dir / 'epoch_1.pth'), scalars


def test_one_epoch_trains_with_finite_loss_and_saves(trained):
    name, checkpoint, scalars = trained
    assert [s['step'] for s in scalars] == [1, 2]
    assert all(math.isfinite(s['loss']) for s in scalars)
    # the lr at the first step: the lr x the recipe's warm-up start factor
    assert scalars[0]['lr'] == pytest.approx(BENCHMARK_LR * 1e-4, rel=1e-6)
    meta = torch.load(checkpoint, map_location='cpu', weights_only=True)['meta']
    assert (meta['epoch'], meta['iter']) == (1, 2)


@pytest.mark.parametrize('transfer', sorted(TRANSFER))
def test_checkpoint_loads_into_transfer_backbone(trained, transfer):
    name, checkpoint, _ = trained
    source = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    online = {k[len('backbone.'):]: v for k, v in source.items() if k.startswith('backbone.')}
    assert len(online) == 54
    state, report = load_densevit_state_dict(checkpoint)
    assert (report['format'], report['prefix'], report['dropped']) == (
        'densevit', 'state_dict.backbone.', [])
    assert sorted(state) == sorted(online)

    cfg = Config.fromfile(transfer)
    backbone_cfg = cfg.model.backbone
    assert backbone_cfg.type == 'mmpretrain.DenseViT'
    backbone_cfg.init_cfg.checkpoint = checkpoint
    init_default_scope('mmpretrain')
    backbone = MODELS.build(dict(backbone_cfg, type='DenseViT'))
    backbone.init_weights()
    loaded = backbone.state_dict()
    assert len(loaded) == TRANSFER[transfer]
    for key, value in loaded.items():
        if key != 'pos_embed':
            assert torch.equal(value, online[key]), key
    # the 6 x 6 grid of 96 px views, bicubically resized to the 8 x 8 of 128 px images
    grid = online['pos_embed'][:, 1:].reshape(1, 6, 6, 192).permute(0, 3, 1, 2)
    resized = F.interpolate(grid, size=(8, 8), mode='bicubic', align_corners=False)
    resized = resized.flatten(2).transpose(1, 2)  # (1, 64, 192)
    if backbone.with_cls_token:
        resized = torch.cat([online['pos_embed'][:, :1], resized], dim=1)
    torch.testing.assert_close(loaded['pos_embed'], resized, rtol=0, atol=1e-6)
    if name == 'mocov3':  # the online encoder, not the momentum one
        key = 'layers.0.attn.qkv.weight'
        assert not torch.equal(loaded[key], source[f'momentum_encoder.module.0.{key}'])


@pytest.mark.parametrize('peer', ['mocov3', 'mae', 'dino', 'ibot'])
def test_every_peer_trains_with_densevits_lr_batch_and_epochs(peer):
    """The same optimisation budget as DenseViT's built-in pretraining: lr, batch, epochs."""
    ours = Config.fromfile('configs/builtin/densevit-mini_pretrain_builtin.py')
    cfg = Config.fromfile(f'configs/builtin/{peer}-mini_pretrain_builtin.py')
    assert cfg.optim_wrapper.optimizer.lr == ours.optim_wrapper.optimizer.lr == BENCHMARK_LR
    assert cfg.train_dataloader.batch_size == ours.train_dataloader.batch_size == 64
    assert cfg.train_cfg.max_epochs == ours.train_cfg.max_epochs == 8
