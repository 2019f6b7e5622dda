"""Every segmentation and detection config trains one iteration and validates on CPU, on tiny
ADE20K / COCO sets in the real layouts, with the backbone loaded from a pretraining checkpoint."""
import glob
import os.path as osp

import pytest
import torch
from mmdet.datasets import CocoDataset
from mmengine.config import Config
from mmengine.runner import Runner

from densevit_mm import compat
from densevit_mm.datasets import write_ade20k_layout, write_coco_layout
from densevit_mm.models import DenseViT

SEG_CONFIGS = sorted(glob.glob('configs/segmentation/*.py'))
DET_CONFIGS = sorted(glob.glob('configs/detection/*.py'))


@pytest.fixture(scope='module')
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp('transfer_data')
    write_ade20k_layout(str(root / 'ade'), num_train=4, num_val=2, size=64)
    # COCO's 80 names: the shapes take the first four, the configs stay as made for COCO
    write_coco_layout(str(root / 'coco'), num_train=4, num_val=2, size=64,
                      category_names=CocoDataset.METAINFO['classes'])
    return root


@pytest.fixture(scope='module')
def pretrain_checkpoints(tmp_path_factory):
    """Pretraining-format checkpoints (backbone, key encoder, queue) per arch."""
    root = tmp_path_factory.mktemp('ckpt')
    paths = {}
    for arch in ('densevit-s', 'densevit-b'):
        torch.manual_seed(0)
        backbone = DenseViT(arch=arch)
        state = {f'backbone.{k}': v for k, v in backbone.state_dict().items()}
        state.update({f'target_encoder.module.0.{k}': v * 0
                      for k, v in backbone.state_dict().items()})
        state['head.loss_dense.queue'] = torch.zeros(4, 128)
        torch.save(dict(state_dict=state, meta=dict()), root / f'{arch}.pth')
        paths[arch] = (str(root / f'{arch}.pth'), backbone.state_dict())
    return paths


def shrink(node, size):
    """Replace every image size in pipelines and preprocessors by ``size`` (in place)."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ('scale', 'crop_size', 'size') and isinstance(value, (tuple, list)):
                node[key] = (size, size)
            else:
                shrink(value, size)
    elif isinstance(node, list):
        for item in node:
            shrink(item, size)


def set_data_root(dataloader, root):
    dataset = dataloader.dataset
    while 'dataset' in dataset:  # RepeatDataset and friends
        dataset = dataset.dataset
    dataset.data_root = root
    dataloader.num_workers = 0
    dataloader.persistent_workers = False


def run_one_iteration(cfg, work_dir, checkpoints):
    arch = cfg.model.backbone.arch
    path, expected = checkpoints[arch]
    cfg.model.backbone.init_cfg.checkpoint = path
    cfg.work_dir = str(work_dir)
    cfg.train_dataloader.batch_size = 2
    cfg.train_cfg = dict(type='IterBasedTrainLoop', max_iters=1, val_interval=1)
    # no checkpoint: a ViT-B Mask R-CNN one is 1.4 GB with its optimizer state, and saving is
    # covered by the pretraining tests
    cfg.default_hooks.checkpoint = None
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    # the visualizer is a process-wide instance looked up by name: one per test, or this test
    # would write into the work dir of the first one (removed once that test passed)
    cfg.visualizer.name = f'visualizer_{work_dir.name}'
    runner = Runner.from_cfg(cfg)
    compat.revert_sync_batchnorm_without_cuda(runner)
    runner.model.init_weights()
    loaded = runner.model.backbone.state_dict()
    same = [k for k, v in expected.items() if k in loaded and k != 'pos_embed'
            and torch.equal(loaded[k], v)]
    # every checkpoint tensor arrived (the position embedding was resized on the way)
    assert len(same) == len([k for k in loaded if k != 'pos_embed'])
    runner.train()
    assert runner.iter == 1
    return {k: v.current() for k, v in runner.message_hub.log_scalars.items()}


@pytest.mark.parametrize('path', SEG_CONFIGS)
def test_segmentation_config_trains_and_validates(path, tmp_path, data_root,
                                                  pretrain_checkpoints):
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == 'mmpretrain.DenseViT'
    assert cfg.model.backbone.init_cfg.prefix == 'backbone.'
    shrink(cfg.train_dataloader, 64)
    shrink(cfg.val_dataloader, 64)
    shrink(cfg.model.data_preprocessor, 64)
    if cfg.model.test_cfg.get('mode') == 'slide':
        cfg.model.test_cfg.crop_size, cfg.model.test_cfg.stride = (64, 64), (43, 43)
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        set_data_root(loader, str(data_root / 'ade' / 'ADEChallengeData2016'))
    scalars = run_one_iteration(cfg, tmp_path, pretrain_checkpoints)
    assert torch.isfinite(torch.tensor(scalars['train/loss']))
    assert 0 <= scalars['val/mIoU'] <= 100


@pytest.mark.parametrize('path', DET_CONFIGS)
def test_detection_config_trains_and_validates(path, tmp_path, data_root, pretrain_checkpoints):
    cfg = Config.fromfile(path)
    assert cfg.model.backbone.type == 'mmpretrain.DenseViT'
    assert cfg.model.backbone.img_size == 1024
    shrink(cfg.train_dataloader, 128)
    shrink(cfg.val_dataloader, 128)
    shrink(cfg.model.data_preprocessor, 128)
    coco = str(data_root / 'coco') + osp.sep
    for loader in (cfg.train_dataloader, cfg.val_dataloader):
        set_data_root(loader, coco)
    cfg.val_evaluator.ann_file = coco + 'annotations/instances_val2017.json'
    cfg.model.test_cfg.rcnn.score_thr = 0.  # an untrained head still gives detections
    scalars = run_one_iteration(cfg, tmp_path, pretrain_checkpoints)
    assert torch.isfinite(torch.tensor(scalars['train/loss']))
    assert 0 <= scalars['val/coco/bbox_mAP'] <= 1 and 0 <= scalars['val/coco/segm_mAP'] <= 1


def train_main(repo_root, argv, monkeypatch):
    """``main()`` of tools/train.py in this process; its SystemExit code."""
    import importlib.util
    import sys
    spec = importlib.util.spec_from_file_location('train_tool',
                                                  osp.join(repo_root, 'tools/train.py'))
    train = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(train)
    monkeypatch.setattr(sys, 'argv', ['train.py'] + argv)
    with pytest.raises(SystemExit) as stop:
        train.main()
    return stop.value.code


@pytest.mark.parametrize('config', ['configs/builtin/linear_densevit-mini_builtin-seg.py',
                                    'configs/builtin/mask-rcnn_densevit-mini_builtin-det.py'])
@pytest.mark.parametrize('name,what', [
    ('notes.pth', "it is a text file of 15 bytes starting 'see the README'"),
    ('cut.pth', 'it is a zip archive cut short'),
])
def test_tools_train_refuses_an_init_cfg_file_that_is_no_checkpoint_in_one_line(
        tmp_path, repo_root, monkeypatch, config, name, what):
    (tmp_path / 'notes.pth').write_text('see the README\n')
    torch.save(dict(state_dict={'backbone.layers.0.ln1.weight': torch.ones(256)}),
               tmp_path / 'whole.pth')
    data = (tmp_path / 'whole.pth').read_bytes()
    (tmp_path / 'cut.pth').write_bytes(data[:len(data) // 2])
    bad = tmp_path / name
    # no data there: without the check the run would fail later, at the dataset
    code = train_main(repo_root, [config, '--work-dir', str(tmp_path / 'work'), '--cfg-options',
                                  f'model.backbone.init_cfg.checkpoint={bad}',
                                  f'train_dataloader.dataset.data_root={tmp_path / "none"}'],
                      monkeypatch)
    # a str code: Python prints it alone on stderr and exits with status 1, no traceback
    assert isinstance(code, str) and '\n' not in code
    assert code.startswith(f'tools/train.py: model.backbone.init_cfg.checkpoint: {bad} is not '
                           f'a readable PyTorch checkpoint: {what}')
    assert code.endswith('; give the path of a .pth checkpoint')
