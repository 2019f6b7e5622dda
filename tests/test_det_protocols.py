"""The frozen-backbone detection protocols of the built-in benchmark
(configs/builtin/*-frozen_densevit-mini_builtin-det.py): only the pyramid and the heads learn,
tools/run_benchmark.py's overrides find their keys, a short run logs COCO box AP, and the
supervised oracle's checkpoint (an mmseg model) gives them its whole backbone."""
import glob
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.registry import MODELS, init_default_scope
from mmengine.runner import Runner
from mmengine.utils import import_modules_from_strings

from densevit_mm.checkpoint import load_checkpoint_file
from densevit_mm.datasets import write_coco_layout

# config: trainable parameters (pyramid and heads; the backbone has none)
FROZEN_DET = {
    'configs/builtin/fcos-frozen_densevit-mini_builtin-det.py': 501_757,
    'configs/builtin/mask-rcnn-frozen_densevit-mini_builtin-det.py': 2_317_720,
    'configs/builtin/retinanet-frozen_densevit-mini_builtin-det.py': 537_848,
}
ORACLE_CONFIG = 'configs/builtin/fpn_densevit-mini_builtin-seg.py'
ORACLE_CHECKPOINT = 'work_dirs/builtin/oracle/iter_300.pth'
# cls_token, pos_embed, patch projection (2), 4 layers x 12 tensors, final norm (2)
BACKBONE_TENSORS = 54
# what tools/run_benchmark.py's transfer_stage overrides on the command line (and
# randomness.seed, which it may add)
OVERRIDDEN = ('train_cfg.max_iters', 'train_cfg.val_interval',
              'default_hooks.checkpoint.interval',
              'train_dataloader.dataset.data_root', 'val_dataloader.dataset.data_root',
              'test_dataloader.dataset.data_root', 'model.backbone.init_cfg.checkpoint',
              'val_evaluator.ann_file', 'test_evaluator.ann_file')


def build_model(cfg):
    """The config's model, built in its own scope (mmdet or mmseg)."""
    import_modules_from_strings(cfg.custom_imports['imports'])
    init_default_scope(cfg.default_scope)
    return MODELS.build(cfg.model)


def test_every_frozen_detection_config_is_listed():
    assert sorted(glob.glob('configs/builtin/*-frozen_*-det.py')) == sorted(FROZEN_DET)


@pytest.mark.parametrize('path', sorted(FROZEN_DET))
def test_config_trains_nothing_but_pyramid_and_heads(path):
    cfg = Config.fromfile(path)
    assert cfg.benchmark_column.startswith('APbox (') and 'frozen' in cfg.benchmark_column
    for key in OVERRIDDEN:
        node = cfg
        for part in key.split('.')[:-1]:
            node = node[part]
        assert key.split('.')[-1] in node, key
    # the lr step is where the config says it is only if the main job's budget is max_iters
    milestone = cfg.param_scheduler[-1].milestones[0]
    assert milestone < cfg.train_cfg.max_iters == cfg.default_hooks.checkpoint.interval
    model = build_model(cfg)
    model.train()
    assert not [n for n, p in model.backbone.named_parameters() if p.requires_grad]
    assert sum(p.numel() for p in model.backbone.parameters()) > 0
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == FROZEN_DET[path]
    assert not model.backbone.layers[0].training  # no stochastic depth on frozen layers


@pytest.fixture(scope='module')
def coco_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('det_protocols') / 'coco'
    write_coco_layout(str(root), num_train=4, num_val=2, size=64)
    return str(root) + osp.sep


@pytest.fixture(scope='module')
def oracle_checkpoint(tmp_path_factory):
    """A checkpoint of the oracle's own model (mmseg EncoderDecoder: backbone, neck, head),
    as the benchmark's oracle stage writes it, and its backbone tensors."""
    cfg = Config.fromfile(ORACLE_CONFIG)
    cfg.model.backbone.init_cfg = None
    torch.manual_seed(0)
    model = build_model(cfg)
    path = tmp_path_factory.mktemp('oracle') / 'iter_2.pth'
    torch.save(dict(state_dict=model.state_dict(), meta=dict()), path)
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    return str(path), backbone


def test_the_oracle_model_has_more_than_a_backbone(oracle_checkpoint):
    state = load_checkpoint_file(oracle_checkpoint[0])['state_dict']
    assert len([k for k in state if k.startswith('backbone.')]) == BACKBONE_TENSORS
    assert any(k.startswith('decode_head.') for k in state)  # left out on the way


@pytest.mark.parametrize('path', sorted(FROZEN_DET))
def test_two_iterations_log_box_ap_and_leave_the_backbone_alone(path, tmp_path, coco_root,
                                                                 oracle_checkpoint):
    checkpoint, oracle_backbone = oracle_checkpoint
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg.checkpoint = checkpoint
    cfg.work_dir = str(tmp_path)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        loader.dataset.data_root = coco_root
        loader.num_workers, loader.persistent_workers = 0, False
    cfg.train_dataloader.batch_size = 2
    cfg.val_evaluator.ann_file = coco_root + 'annotations/instances_val2017.json'
    cfg.train_cfg.max_iters = cfg.train_cfg.val_interval = 2
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.visualizer.name = f'visualizer_{tmp_path.name}'
    # an untrained head scores below the usual threshold: no detections, no AP logged
    test_cfg = cfg.model.test_cfg
    (test_cfg.rcnn if 'rcnn' in test_cfg else test_cfg).score_thr = 0.
    runner = Runner.from_cfg(cfg)
    runner.model.init_weights()
    loaded = runner.model.backbone.state_dict()
    assert len(loaded) == BACKBONE_TENSORS
    assert all(torch.equal(loaded[k], oracle_backbone[k]) for k in loaded)
    neck = {k: v.clone() for k, v in runner.model.neck.state_dict().items()}
    runner.train()
    assert runner.iter == 2
    after = runner.model.backbone.state_dict()
    assert all(torch.equal(after[k], oracle_backbone[k]) for k in after)
    assert any(not torch.equal(v, neck[k]) for k, v in runner.model.neck.state_dict().items())
    scalars = {k: v.current() for k, v in runner.message_hub.log_scalars.items()}
    assert torch.isfinite(torch.tensor(scalars['train/loss']))
    assert 0 <= scalars['val/coco/bbox_mAP'] <= 1


@pytest.mark.skipif(not osp.exists(ORACLE_CHECKPOINT),
                    reason=f'{ORACLE_CHECKPOINT} is written by tools/run_benchmark.py')
@pytest.mark.parametrize('path', sorted(FROZEN_DET))
def test_the_benchmark_oracle_loads_whole(path):
    cfg = Config.fromfile(path)
    cfg.model.backbone.init_cfg.checkpoint = ORACLE_CHECKPOINT
    model = build_model(cfg)
    model.backbone.init_weights()
    state = load_checkpoint_file(ORACLE_CHECKPOINT)['state_dict']
    loaded = model.backbone.state_dict()
    assert len(loaded) == BACKBONE_TENSORS
    assert all(torch.equal(v, state['backbone.' + k]) for k, v in loaded.items())


def test_no_detection_on_the_whole_set_scores_ap_zero(monkeypatch):
    """mmdet's CocoMetric returns no metric when nothing was detected (pycocotools cannot load
    an empty result list); the built-in detection configs' metric scores it 0 instead and
    leaves every other case to mmdet."""
    import numpy as np
    from mmdet.evaluation import CocoMetric

    from densevit_mm.downstream.detection import ZeroAwareCocoMetric
    for path in list(FROZEN_DET) + ['configs/builtin/mask-rcnn_densevit-mini_builtin-det.py']:
        assert Config.fromfile(path).val_evaluator.type == 'ZeroAwareCocoMetric', path
    metric = ZeroAwareCocoMetric(metric=['bbox', 'segm'])
    empty = dict(labels=np.zeros(0, np.int64), bboxes=np.zeros((0, 4)), scores=np.zeros(0))
    zeros = metric.compute_metrics([({}, empty), ({}, empty)])
    assert zeros == {f'{m}_{k}': 0.0 for m in ('bbox', 'segm')
                     for k in ('mAP', 'mAP_50', 'mAP_75', 'mAP_s', 'mAP_m', 'mAP_l')}
    monkeypatch.setattr(CocoMetric, 'compute_metrics', lambda self, results: {'mmdet': 1})
    one = dict(empty, labels=np.zeros(1, np.int64))
    assert metric.compute_metrics([({}, empty), ({}, one)]) == {'mmdet': 1}
