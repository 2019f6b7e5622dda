"""Pretraining through tools/train.py and tools/dist_train.sh on generated images (CPU)."""
import os
import os.path as osp
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

DEBUG_CONFIG = 'configs/pretrain/densevit_debug.py'


def write_test_config(path, data_root, pipeline=None, **overrides):
    """A config inheriting the debug one, with the recording hook and small batches."""
    dataset = f'data_root={data_root!r}' + (f', pipeline={pipeline}' if pipeline else '')
    lines = [
        f'_base_ = {osp.abspath(DEBUG_CONFIG)!r}',
        "custom_imports = dict(imports=['densevit_mm', 'tests.fixtures.recording_hook'], "
        'allow_failed_imports=False)',
        "custom_hooks = [dict(type='LambdaWarmupHook', start_iters=2), "
        "dict(type='RecordingHook')]",
        f'train_dataloader = dict(batch_size=4, dataset=dict({dataset}))',
    ]
    lines += [f'{key} = {value}' for key, value in overrides.items()]
    path.write_text('\n'.join(lines) + '\n')
    return str(path)


def free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_two_process_cpu_run_shares_one_queue(tmp_path, synthetic_root, repo_root):
    config = write_test_config(tmp_path / 'cfg.py', synthetic_root,
                               train_cfg="dict(type='IterBasedTrainLoop', max_iters=5)")
    work_dir = tmp_path / 'work'
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    result = subprocess.run(
        [osp.join(repo_root, 'tools/dist_train.sh'), config, '2', '--work-dir', str(work_dir)],
        env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    records = [torch.load(work_dir / f'record_rank{r}.pt', weights_only=True) for r in (0, 1)]
    batch, world = 4, 2
    for name in ('head.loss_global', 'head.loss_dense'):
        q0, q1 = (rec['queues'][name] for rec in records)
        assert torch.equal(q0['queue'], q1['queue'])
        assert q0['ptr'] == q1['ptr'] == 5 * batch * world
        # the last write holds rank 0's keys, then rank 1's, in that order
        last = q0['queue'][q0['ptr'] - batch * world:q0['ptr']]
        torch.testing.assert_close(last[:batch], q0['local_keys'])
        torch.testing.assert_close(last[batch:], q1['local_keys'])
        assert not torch.allclose(q0['local_keys'], q1['local_keys'])
    # the queues are buffers, so the checkpoint carries them
    state = torch.load(work_dir / 'iter_5.pth', weights_only=True)['state_dict']
    assert torch.equal(state['head.loss_dense.queue'],
                       records[0]['queues']['head.loss_dense']['queue'])
    assert int(state['head.loss_dense.queue_ptr']) == 5 * batch * world


DETERMINISTIC_VIEWS = """[
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=[1, 1], transforms=[
        [dict(type='Resize', scale=(64, 64))],
        [dict(type='Resize', scale=(64, 64)), dict(type='RandomFlip', prob=1.0)]]),
    dict(type='PackInputs')]"""


def run(config, work_dir, max_iters, resume=False):
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    cfg.train_cfg.max_iters = max_iters
    cfg.default_hooks.checkpoint = dict(type='CheckpointHook', by_epoch=False, interval=3)
    cfg.resume = resume
    Runner.from_cfg(cfg).train()
    return torch.load(work_dir / 'record_rank0.pt', weights_only=True), torch.load(
        work_dir / f'iter_{max_iters}.pth', weights_only=True)


def test_resume_continues_exactly(tmp_path, synthetic_root):
    # Fixed views: the data pipeline's RNG state is not part of a checkpoint.
    config = write_test_config(tmp_path / 'cfg.py', synthetic_root, DETERMINISTIC_VIEWS)
    straight, straight_ckpt = run(config, tmp_path / 'straight', max_iters=6)
    run(config, tmp_path / 'resumed', max_iters=3)
    resumed, resumed_ckpt = run(config, tmp_path / 'resumed', max_iters=6, resume=True)

    # LambdaWarmupHook(start_iters=2): the dense term is off for iterations 0 and 1
    assert [straight['losses'][it]['loss_dense'] == 0 for it in range(6)] == [True] * 2 + [False] * 4
    assert sorted(resumed['losses']) == [3, 4, 5]
    for it in (3, 4, 5):
        assert resumed['losses'][it] == pytest.approx(straight['losses'][it], rel=1e-6)
    for name in ('head.loss_global', 'head.loss_dense'):
        assert resumed['queues'][name]['ptr'] == straight['queues'][name]['ptr'] == 24
        torch.testing.assert_close(resumed['queues'][name]['queue'],
                                   straight['queues'][name]['queue'], rtol=1e-6, atol=1e-7)
    ema = {k: v for k, v in straight_ckpt['state_dict'].items() if k.startswith('target_encoder')}
    assert 'target_encoder.steps' in ema and int(ema['target_encoder.steps']) == 6
    for key, value in ema.items():
        torch.testing.assert_close(resumed_ckpt['state_dict'][key], value, rtol=1e-6, atol=1e-7)
