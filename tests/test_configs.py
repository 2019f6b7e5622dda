import glob
import os.path as osp

import pytest
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmengine.utils import import_modules_from_strings
from mmpretrain.registry import HOOKS, MODELS

CONFIGS = sorted(c for c in glob.glob('configs/**/*.py', recursive=True) if '_base_' not in c)


def test_configs_found():
    assert 'configs/pretrain/densevit_s.py' in CONFIGS
    assert len(CONFIGS) >= 5


def vit_params(width: int, depth: int, img_size: int, cls_token: bool = True) -> int:
    """Parameters of a ViT with 16 px patches, MLP ratio 4 and a final LayerNorm, no head:
    timm's ``vit_small_patch16_224(num_classes=0)`` has 21,665,664, ViT-Ti 5,524,416,
    ViT-B 85,798,656 (the published 22.05M / 5.72M / 86.57M less the 1000-class head)."""
    D, tokens = width, (img_size // 16) ** 2 + cls_token
    block = 2 * D + (3 * D * D + 3 * D) + (D * D + D) + 2 * D + (4 * D * D + 4 * D) + (4 * D * D
                                                                                      + D)
    return (3 * 16 * 16 * D + D) + cls_token * D + tokens * D + depth * block + 2 * D


def mlp_params(in_dims: int, hidden: int, out_dims: int = 128) -> int:
    return in_dims * hidden + hidden + hidden * out_dims + out_dims


# width, depth, input size, CLS token, projection MLPs of a pretraining model (number, hidden)
ARCHS = {
    'configs/builtin/densevit-mini_pretrain_builtin.py': (192, 4, 96, True, (2, 512)),
    'configs/builtin/fcos-frozen_densevit-mini_builtin-det.py': (192, 4, 128, True, None),
    'configs/builtin/fpn-frozen_densevit-mini_builtin-seg.py': (192, 4, 128, True, None),
    'configs/builtin/fpn_densevit-mini_builtin-seg.py': (192, 4, 128, True, None),
    'configs/builtin/dino-mini_pretrain_builtin.py': (192, 4, 96, True, None),
    'configs/builtin/globalonly-mini_pretrain_builtin.py': (192, 4, 96, True, (1, 512)),
    'configs/builtin/ibot-mini_pretrain_builtin.py': (192, 4, 96, True, None),
    'configs/builtin/linear_densevit-mini_builtin-seg.py': (192, 4, 128, True, None),
    'configs/builtin/mae-mini_pretrain_builtin.py': (192, 4, 96, True, None),
    'configs/builtin/mask-rcnn_densevit-mini_builtin-det.py': (192, 4, 128, False, None),
    'configs/builtin/mask-rcnn-frozen_densevit-mini_builtin-det.py': (192, 4, 128, True, None),
    'configs/builtin/mocov3-mini_pretrain_builtin.py': (192, 4, 96, True, None),
    'configs/builtin/retinanet-frozen_densevit-mini_builtin-det.py': (192, 4, 128, True, None),
    'configs/classification/linear_probe_densevit_s.py': (384, 12, 224, True, None),
    'configs/detection/mask-rcnn_densevit-b_simplefpn_16xb4-lsj-100e_coco.py':
        (768, 12, 1024, False, None),
    'configs/detection/mask-rcnn_densevit-b_simplefpn_8xb2-1x_coco.py':
        (768, 12, 1024, False, None),
    'configs/detection/mask-rcnn_densevit-s_simplefpn_16xb4-lsj-100e_coco.py':
        (384, 12, 1024, False, None),
    'configs/detection/mask-rcnn_densevit-s_simplefpn_8xb2-1x_coco.py':
        (384, 12, 1024, False, None),
    'configs/pretrain/densevit_b.py': (768, 12, 224, True, (2, 2048)),
    'configs/pretrain/densevit_debug.py': (192, 1, 96, True, (2, 256)),
    'configs/pretrain/densevit_s.py': (384, 12, 224, True, (2, 2048)),
    'configs/pretrain/densevit_s_device-photometric.py': (384, 12, 224, True, (2, 2048)),
    'configs/pretrain/densevit_s_shards.py': (384, 12, 224, True, (2, 2048)),
    'configs/pretrain/densevit_s_worker-augment.py': (384, 12, 224, True, (2, 2048)),
    'configs/pretrain/densevit_ti.py': (192, 12, 224, True, (2, 2048)),
    'configs/segmentation/fpn_densevit-s_4xb4-40k_ade20k-512x512.py': (384, 12, 512, True, None),
    'configs/segmentation/upernet_densevit-b_8xb2-160k_ade20k-512x512.py':
        (768, 12, 512, True, None),
    'configs/segmentation/upernet_densevit-s_8xb2-160k_ade20k-512x512.py':
        (384, 12, 512, True, None),
}


def test_the_parameter_formula_gives_the_published_vit_sizes():
    assert vit_params(384, 12, 224) == 21_665_664
    assert vit_params(192, 12, 224) == 5_524_416
    assert vit_params(768, 12, 224) == 85_798_656


def test_every_config_has_its_expected_architecture():
    assert sorted(ARCHS) == CONFIGS


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds_the_expected_architecture(path):
    cfg = Config.fromfile(path)
    assert 'densevit_mm' in cfg.custom_imports['imports']
    import_modules_from_strings(cfg.custom_imports['imports'])
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    for hook in cfg.get('custom_hooks', []):
        HOOKS.build(hook)
    width, depth, img_size, cls_token, mlps = ARCHS[path]
    backbone = sum(p.numel() for p in model.backbone.parameters())
    assert backbone == vit_params(width, depth, img_size, cls_token)
    grid = (img_size // 16) ** 2
    assert model.backbone.pos_embed.shape == (1, grid + cls_token, width)
    if mlps is not None:  # online backbone and neck, and their EMA copy; queues are buffers
        count, hidden = mlps
        total = sum(p.numel() for p in model.parameters())
        assert total == 2 * (backbone + count * mlp_params(width, hidden))
    if path == 'configs/classification/linear_probe_densevit_s.py':  # ViT-S/16: 22.05M
        assert sum(p.numel() for p in model.parameters()) == 22_050_664


@pytest.mark.parametrize('size,width', [('ti', 192), ('s', 384), ('b', 768)])
def test_pretrain_configs_follow_the_protocol(size, width):
    cfg = Config.fromfile(f'configs/pretrain/densevit_{size}.py')
    init_default_scope('mmpretrain')
    model = MODELS.build(cfg.model)
    assert model.backbone.embed_dims == width and model.backbone.num_layers == 12
    for loss in (model.head.loss_global, model.head.loss_dense):
        assert loss.queue.shape == (65536, 128) and loss.temperature == 0.2
    assert model.loss_lambda == 0.5
    assert cfg.train_dataloader.batch_size == 64 and cfg.auto_scale_lr.base_batch_size == 512
    assert cfg.optim_wrapper.optimizer.type == 'AdamW'
    assert [s['type'] for s in cfg.param_scheduler] == ['LinearLR', 'CosineAnnealingLR']
    # the algorithm's lambda warm-up is listed, not left to the user
    assert [h['type'] for h in cfg.custom_hooks] == ['LambdaWarmupHook']
    assert osp.join(cfg.train_dataloader.dataset.data_root,
                    cfg.train_dataloader.dataset.data_prefix) == 'data/imagenet/train'
    # fed at GPU speed: the views are made on the device, workers from the launcher's cores,
    # and the log says when the loader falls behind
    assert cfg.data_preprocessor.type == 'DeviceAugmentDataPreprocessor'
    assert cfg.train_dataloader.collate_fn.type == 'collate_source_images'
    views = cfg.train_dataloader.dataset.pipeline[1]['transforms']
    assert [[t['type'] for t in view] for view in views] == [
        ['DeferredResizedCrop', 'DeferredPhotometric', 'RandomFlip']]
    assert cfg.train_dataloader.num_workers == 'auto'
    assert cfg.default_hooks.data_throughput.type == 'DataThroughputHook'
