"""tools/benchmark_table.py on hand-made work dirs with known metrics."""
import csv
import json
import os
import os.path as osp
import subprocess
import sys

import torch
from PIL import Image

from densevit_mm.datasets import BUILTIN_MARKER


def fake_run(work_dir, checkpoint, data_root, metrics, frozen_stages=-1, column=None):
    run = osp.join(work_dir, '20260101_000000', 'vis_data')
    os.makedirs(run)
    init = 'None' if checkpoint is None else \
        f"dict(type='Pretrained', checkpoint={checkpoint!r}, prefix='backbone.')"
    with open(osp.join(run, 'config.py'), 'w') as f:
        f.write(f"model = dict(backbone=dict(type='mmpretrain.DenseViT', arch='densevit-s', "
                f"frozen_stages={frozen_stages}, init_cfg={init}))\n"
                f"val_dataloader = dict(dataset=dict(data_root={data_root!r}))\n")
        if column:
            f.write(f'benchmark_column = {column!r}\n')
    with open(osp.join(run, 'scalars.json'), 'w') as f:
        f.write(json.dumps({'loss': 1.0, 'step': 10}) + '\n')
        f.write(json.dumps({**metrics, 'step': 20}) + '\n')


def fake_pretraining(path, loss_lambda, epoch):
    cfg = f"model = dict(type='DenseViTSelfSup', loss_lambda={loss_lambda})\n"
    torch.save(dict(meta=dict(cfg=cfg, epoch=epoch, iter=epoch * 10), state_dict={}), path)


def test_table_from_work_dirs(tmp_path, repo_root):
    data = tmp_path / 'data'
    data.mkdir()
    (data / BUILTIN_MARKER).write_text('{}')
    os.makedirs(data / 'ade')
    fake_pretraining(tmp_path / 'dense.pth', 0.5, 8)
    fake_pretraining(tmp_path / 'global.pth', 0.0, 8)
    root = tmp_path / 'runs'
    fake_run(root / 'seg_dense', str(tmp_path / 'dense.pth'), str(data / 'ade'),
             {'mIoU': 41.25, 'aAcc': 80.0})
    fake_run(root / 'det_dense', str(tmp_path / 'dense.pth'), str(data / 'ade'),
             {'coco/bbox_mAP': 0.375, 'coco/segm_mAP': 0.3125})
    fake_run(root / 'seg_global', str(tmp_path / 'global.pth'), str(data / 'ade'),
             {'mIoU': 30.0})
    # a frozen backbone (all 12 layers) is a probe: its own column, not the fine-tuned mIoU
    fake_run(root / 'seglinear_dense', str(tmp_path / 'dense.pth'), str(data / 'ade'),
             {'mIoU': 20.5}, frozen_stages=12)
    fake_run(root / 'segpartial_global', str(tmp_path / 'global.pth'), str(data / 'ade'),
             {'mIoU': 31.0}, frozen_stages=11)
    fake_run(root / 'seg_random', None, '/nonexistent/real/ade', {'mIoU': 12.5})
    os.makedirs(root / 'pretrain_dense' / '20260101_000000' / 'vis_data')  # no metrics: ignored

    out = tmp_path / 'results'
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/benchmark_table.py'),
                             str(root), '--out', str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    with open(out / 'results.csv') as f:
        rows = list(csv.DictReader(f))
    measured = {r['method']: r for r in rows if r['block'] == 'measured'}
    assert set(measured) == {'DenseViT (lambda=0.5)', 'Global-only contrastive (lambda=0)',
                             'Random init'}
    dense = measured['DenseViT (lambda=0.5)']
    assert float(dense['mIoU']) == 41.25 and float(dense['mIoU frozen']) == 20.5
    assert measured['Global-only contrastive (lambda=0)']['mIoU frozen'] == ''
    assert float(dense['APbox']) == 37.5 and float(dense['APmask']) == 31.25
    assert dense['pretraining_epochs'] == '8' and dense['data'] == 'built-in (generated)'
    assert sorted(dense['config'].split(';')) == ['det_dense', 'seg_dense', 'seglinear_dense']
    assert measured['Random init']['data'] == 'real'
    assert measured['Random init']['APbox'] == ''
    published = [r for r in rows if r['block'] == 'published']
    assert published and all(r['source'] for r in published)

    markdown = (out / 'results.md').read_text()
    measured_block, published_block = markdown.split('## Published')
    assert ('| DenseViT (lambda=0.5) | densevit-s | 8 | 41.2 | 20.5 | 37.5 | 31.2 |'
            in measured_block)
    assert 'iBOT' not in measured_block and 'iBOT' in published_block
    with Image.open(out / 'results.png') as image:
        assert image.format == 'PNG' and image.size[0] > 100


def test_no_metrics_is_a_clear_error(tmp_path, repo_root):
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/benchmark_table.py'),
                             str(tmp_path)], capture_output=True, text=True)
    assert result.returncode != 0 and 'logged mIoU or COCO AP' in result.stderr


def test_seeds_are_grouped_and_the_oracle_calibrates_each_column(tmp_path, repo_root):
    data = tmp_path / 'data'
    os.makedirs(data / 'ade')
    (data / BUILTIN_MARKER).write_text('{}')
    oracle = tmp_path / 'oracle.pth'
    torch.save(dict(meta=dict(cfg="model = dict(type='EncoderDecoder')", iter=600),
                    state_dict={}), oracle)
    root = tmp_path / 'runs'
    probe = {'random': [15.0, 16.0, 17.0], 'oracle': [29.0, 30.0, 31.0]}  # gap 14, std 1
    tuned = {'random': [33.0, 35.0, 34.0], 'oracle': [35.0, 33.0, 37.0]}  # gap 1, std 1.6
    for start, checkpoint in (('random', None), ('oracle', str(oracle))):
        for seed in range(3):
            fake_run(root / f'seglinear_{start}_seed{seed}', checkpoint, str(data / 'ade'),
                     {'mIoU': probe[start][seed]}, frozen_stages=12, column='mIoU linear')
            fake_run(root / f'seg_{start}_seed{seed}', checkpoint, str(data / 'ade'),
                     {'mIoU': tuned[start][seed]})
    out = tmp_path / 'results'
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/benchmark_table.py'),
                             str(root), '--out', str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    markdown = (out / 'results.md').read_text()
    assert ('| Supervised oracle (labels) | densevit-s | 600 iters | 35.0 ± 2.0 (3) | '
            '30.0 ± 1.0 (3) |') in markdown
    assert '| Random init | densevit-s | 0 | 34.0 ± 1.0 (3) | 16.0 ± 1.0 (3) |' in markdown
    # pooled std: sqrt((1^2 + 2^2) / 2) = 1.58 for the fine-tuned column
    assert '| mIoU | 34.0 ± 1.0 (3) | 35.0 ± 2.0 (3) | 1.0 | 1.58 | 0.6 | no |' in markdown
    assert ('| mIoU linear | 16.0 ± 1.0 (3) | 30.0 ± 1.0 (3) | 14.0 | 1.00 | 14.0 | yes |'
            in markdown)
    with open(out / 'results.csv') as f:
        rows = {r['method']: r for r in csv.DictReader(f) if r['block'] == 'measured'}
    assert float(rows['Random init']['mIoU linear']) == 16.0
    assert float(rows['Random init']['mIoU linear std']) == 1.0
    assert rows['Random init']['mIoU linear n'] == '3'
