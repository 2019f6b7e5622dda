"""The linear-probe config through tools/train.py and tools/test.py on generated classes."""
import json
import os
import os.path as osp
import subprocess
import sys

import torch
from PIL import Image

from densevit_mm.datasets import render_scene
from densevit_mm.models import DenseViT


def write_class_folders(root):
    for split, offset in (('train', 0), ('val', 100)):
        for label in ('a', 'b'):
            os.makedirs(osp.join(root, split, label))
            for i in range(4):
                image, _ = render_scene(ord(label), offset + i, 64)
                Image.fromarray(image).save(osp.join(root, split, label, f'{i}.png'))


def test_linear_probe_trains_only_the_head_and_evaluates(tmp_path, repo_root):
    write_class_folders(str(tmp_path / 'data'))
    backbone = DenseViT(arch='densevit-debug')
    torch.save(dict(state_dict={f'backbone.{k}': v for k, v in backbone.state_dict().items()}),
               tmp_path / 'pretrain.pth')
    probe = osp.join(repo_root, 'configs/classification/linear_probe_densevit_s.py')
    dataset = ("dict(_delete_=True, type='CustomDataset', data_root={!r}, data_prefix='{}', "
               "pipeline={})")
    train_pipeline = ("[dict(type='LoadImageFromFile'), dict(type='RandomResizedCrop', "
                      "scale=64), dict(type='PackInputs')]")
    test_pipeline = "[dict(type='LoadImageFromFile'), dict(type='PackInputs')]"
    (tmp_path / 'cfg.py').write_text('\n'.join([
        f'_base_ = {probe!r}',
        'data_preprocessor = dict(num_classes=2)',
        'model = dict(backbone=dict(arch="densevit-debug", frozen_stages=1, init_cfg=dict('
        f'checkpoint={str(tmp_path / "pretrain.pth")!r})), head=dict(num_classes=2, '
        'in_channels=192))',
        'train_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, '
        f'dataset={dataset.format(str(tmp_path / "data"), "train", train_pipeline)})',
        'val_dataloader = dict(batch_size=4, num_workers=0, persistent_workers=False, '
        f'dataset={dataset.format(str(tmp_path / "data"), "val", test_pipeline)})',
        'test_dataloader = val_dataloader',
        "val_evaluator = dict(type='Accuracy', topk=(1,))",
        'test_evaluator = val_evaluator',
        "train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=1)",
    ]) + '\n')
    work_dir = tmp_path / 'work'
    env = dict(os.environ, OMP_NUM_THREADS='1')
    for script, args in (('train.py', ['--work-dir', str(work_dir)]),
                         ('test.py', [str(work_dir / 'epoch_1.pth'), '--work-dir',
                                      str(work_dir), '--out', str(tmp_path / 'metrics.json')])):
        result = subprocess.run([sys.executable, osp.join(repo_root, 'tools', script),
                                 str(tmp_path / 'cfg.py'), *args], env=env,
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    metrics = json.loads((tmp_path / 'metrics.json').read_text())
    assert 0 <= metrics['accuracy/top1'] <= 100
    # the frozen backbone is exactly the pretrained one; only the head moved
    trained = torch.load(work_dir / 'epoch_1.pth', weights_only=True)['state_dict']
    for key, value in backbone.state_dict().items():
        assert torch.equal(trained[f'backbone.{key}'], value), key
    assert trained['head.fc.weight'].shape == (2, 192)
