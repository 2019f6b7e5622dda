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


@pytest.mark.parametrize('path', CONFIGS)
def test_config_builds(path):
    cfg = Config.fromfile(path)
    assert 'densevit_mm' in cfg.custom_imports['imports']
    import_modules_from_strings(cfg.custom_imports['imports'])
    init_default_scope(cfg.get('default_scope', 'mmpretrain'))
    model = MODELS.build(cfg.model)
    for hook in cfg.get('custom_hooks', []):
        HOOKS.build(hook)
    assert sum(p.numel() for p in model.parameters()) > 0


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
