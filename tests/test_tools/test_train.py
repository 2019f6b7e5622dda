"""Pretraining through tools/train.py and tools/dist_train.sh on generated images (CPU)."""
import os
import os.path as osp
import re
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from densevit_mm.engine import check_device_augmentation
from tests.conftest import load_tool

DEBUG_CONFIG = 'configs/pretrain/densevit_debug.py'


def write_test_config(path, data_root, pipeline=None, **overrides):
    """A config inheriting the debug one, with the recording hook and small batches."""
    dataset = f'data_root={data_root!r}' + (f', pipeline={pipeline}' if pipeline else '')
    lines = [
        f'_base_ = {osp.abspath(DEBUG_CONFIG)!r}',
        "custom_imports = dict(imports=['densevit_mm', 'tests.fixtures.recording_hook', "
        "'tests.fixtures.fault_hook'], allow_failed_imports=False)",
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


def dist_train(config, work_dir, repo_root, *args):
    """tools/dist_train.sh CONFIG 2 on CPU (gloo, MMDistributedDataParallel, as on GPUs)."""
    env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable, OMP_NUM_THREADS='1')
    return subprocess.run(
        [osp.join(repo_root, 'tools/dist_train.sh'), config, '2', '--work-dir', str(work_dir),
         *args], env=env, capture_output=True, text=True, timeout=300)


def test_two_process_cpu_run_shares_one_queue(tmp_path, synthetic_root, repo_root):
    config = write_test_config(
        tmp_path / 'cfg.py', synthetic_root,
        train_cfg="dict(type='IterBasedTrainLoop', max_iters=5)",
        custom_hooks="[dict(type='LambdaWarmupHook', start_iters=2), dict(type='RecordingHook'), "
                     "dict(type='HostSyncCountHook', ignore=['tests/fixtures'])]")
    work_dir = tmp_path / 'work'
    result = dist_train(config, work_dir, repo_root)
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
    # Through MMDistributedDataParallel a step reads the device once, and its only
    # collectives are the decision (with the SIGTERM flag) and the two queues' key gathers.
    # Iteration 0 checks the fused kernel; 3 ends a pass over the 32 images, where the
    # LoggerHook prints (so the logged values are read); 4, the last, logs and saves.
    for rank in (0, 1):
        counts = torch.load(work_dir / f'host_syncs_rank{rank}.pt', weights_only=True)
        assert counts[3]['read:tolist'] == 2
        for it in (1, 2):
            assert counts[it] == {'read:tolist': 1, 'collective:all_reduce': 1,
                                  'collective:all_gather': 2}, (rank, it, counts[it])


@pytest.mark.parametrize('fault,amp', [('nan_loss', ()), ('inf_grad', ('--amp', '--amp-dtype',
                                                                       'float16'))])
def test_two_processes_skip_a_non_finite_step_of_one_rank_together(tmp_path, synthetic_root,
                                                                   repo_root, fault, amp):
    """A nan loss (or, under float16, overflowing gradients) on rank 1 alone at iteration 2:
    on both ranks the step changes no weight and no queue row and logs no value; training
    goes on."""
    # a scale low enough for these gradients: the one overflow is the injected one
    scale = dict(optim_wrapper='dict(loss_scale=dict(init_scale=256., growth_interval=1000))')
    work_dir, output = faulty_two_process_run(tmp_path, synthetic_root, repo_root, fault, amp,
                                              **(scale if amp else {}))
    if fault == 'nan_loss':
        # rank 0, which logs, had a finite loss: the gradients after DDP's all-reduce are not
        assert re.search(r'iteration 3: non-finite loss or gradients on at least one of 2 '
                         r'processes \(here: loss [0-9.]+, gradient norm nan\)', output)
        assert 'step skipped, weights, optimizer state and queues unchanged (1 in a row' in output
    else:  # the scaler's routine search: halved once, not counted as divergence
        assert output.count('float16 gradients overflowed') == 1
        assert 'iteration 3: float16 gradients overflowed; float16 loss scale 256 -> 128; ' \
            'step skipped' in output
    batch, world = 4, 2
    for rank in (0, 1):
        snap = torch.load(work_dir / f'fault_rank{rank}.pt', weights_only=True)[2]
        for name in snap['before']:
            assert torch.equal(snap['before'][name], snap['after'][name]), (rank, name)
        for name, before in snap['queues_before'].items():
            after = snap['queues_after'][name]
            assert after['ptr'] == before['ptr'] == 2 * batch * world, (rank, name)
            assert torch.equal(after['queue'], before['queue']), (rank, name)
        rec = torch.load(work_dir / f'record_rank{rank}.pt', weights_only=True)
        assert rec['applied'] == {0: True, 1: True, 2: False, 3: True, 4: True}
        applied = [it for it in range(5) if it != 2]
        assert rec['logged']['train/loss'] == [rec['losses'][it]['loss'] for it in applied]
        assert all(torch.isfinite(torch.tensor(v)) for v in rec['logged']['train/loss'])
        for name in ('head.loss_global', 'head.loss_dense'):
            assert rec['queues'][name]['ptr'] == 4 * batch * world  # 4 applied steps


def test_two_processes_drop_a_non_finite_key_of_one_rank_alike(tmp_path, synthetic_root,
                                                               repo_root):
    """An applied step where rank 1 alone has a non-finite key for the dense queue: both
    ranks learn it in the step's decision and drop the same row, so the queues stay
    identical (a rank that wrote its gathered rows unchecked would keep the inf)."""
    work_dir, output = faulty_two_process_run(tmp_path, synthetic_root, repo_root,
                                              'inf_queued_key')
    assert '1 of 8 key rows had non-finite entries and were not written' in output
    records = [torch.load(work_dir / f'record_rank{r}.pt', weights_only=True) for r in (0, 1)]
    for rec in records:
        assert all(rec['applied'].values())
        assert rec['logged']['train/dropped_keys'] == [1.0]
        dense = rec['queues']['head.loss_dense']
        assert dense['ptr'] == 5 * 8 - 1 and torch.isfinite(dense['queue']).all()
    for name in ('head.loss_global', 'head.loss_dense'):
        assert torch.equal(records[0]['queues'][name]['queue'],
                           records[1]['queues'][name]['queue'])


def faulty_two_process_run(tmp_path, synthetic_root, repo_root, fault, args=(), **overrides):
    """5 iterations on 2 processes, ``fault`` injected on rank 1 at iteration 2."""
    config = write_test_config(
        tmp_path / 'cfg.py', synthetic_root,
        train_cfg="dict(type='IterBasedTrainLoop', max_iters=5)",
        custom_hooks="[dict(type='LambdaWarmupHook', start_iters=1), dict(type='RecordingHook'), "
                     f"dict(type='FaultHook', fault={fault!r}, iters=[2], rank=1)]", **overrides)
    work_dir = tmp_path / 'work'
    result = dist_train(config, work_dir, repo_root, *args)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-5000:]
    return work_dir, output


def test_sigterm_to_one_rank_stops_both_at_the_same_iteration_with_the_file_in_place(
        tmp_path, synthetic_root, repo_root):
    config = write_test_config(
        tmp_path / 'cfg.py', synthetic_root,
        train_cfg="dict(type='IterBasedTrainLoop', max_iters=50)",
        custom_hooks="[dict(type='LambdaWarmupHook', start_iters=2), "
                     "dict(type='FaultHook', fault='sigterm', iters=[3], rank=1)]")
    work_dir = tmp_path / 'work'
    result = dist_train(config, work_dir, repo_root)
    assert result.returncode != 0  # torchrun reports the workers' status 143 as a failure
    output = result.stdout + result.stderr
    # rank 1 got the signal; rank 0 saved; both stopped after iteration 4
    assert f'SIGTERM: saved {work_dir}/preempted_iter_4.pth after iteration 4' in output
    assert 'exitcode  : 143' in output  # the first rank out; torchrun then ends the other
    assert [f for f in os.listdir(work_dir) if f.endswith('.pth')] == ['preempted_iter_4.pth']
    assert (work_dir / 'preempted').read_text() == f'{work_dir}/preempted_iter_4.pth\n'
    state = torch.load(work_dir / 'preempted_iter_4.pth', weights_only=True)
    assert state['meta']['iter'] == 4


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
    # Random views: each draw seeds its augmentation (ResumableSampler), and mmengine's
    # iteration loop replays the data order on resume.
    config = write_test_config(tmp_path / 'cfg.py', synthetic_root)
    straight, straight_ckpt = run(config, tmp_path / 'straight', max_iters=6)
    run(config, tmp_path / 'resumed', max_iters=3)
    resumed, resumed_ckpt = run(config, tmp_path / 'resumed', max_iters=6, resume=True)

    # LambdaWarmupHook(start_iters=2): the dense term is off for iterations 0 and 1
    dense_off = [straight['losses'][it]['loss_dense'] == 0 for it in range(6)]
    assert dense_off == [True] * 2 + [False] * 4
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


def signal_at_iteration(command, env, iteration, sig):
    """Run ``command`` (a 1000-iteration tools/train.py run logging every iteration), send
    ``sig`` once it logs ``iteration``; its exit code and output."""
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if f'Iter(train) [{iteration:4d}/1000]' in line:
            proc.send_signal(sig)
    return proc.wait(timeout=120), ''.join(lines)


def test_sigterm_stops_tools_train_with_a_checkpoint_and_resume_finishes(tmp_path,
                                                                          synthetic_root,
                                                                          repo_root):
    """A real SIGTERM from outside (Slurm's preemption signal), a data path with a space
    given through --cfg-options, and the requeued job's --resume."""
    import shutil
    import signal

    data = tmp_path / 'my images'
    shutil.copytree(synthetic_root, data)
    work = tmp_path / 'work'
    command = [sys.executable, osp.join(repo_root, 'tools/train.py'), DEBUG_CONFIG,
               '--work-dir', str(work), '--resume', '--cfg-options',
               f'train_dataloader.dataset.data_root={data}/', 'train_dataloader.batch_size=4',
               'default_hooks.logger.interval=1']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    code, text = signal_at_iteration(command + ['train_cfg.max_iters=1000'], env, 3,
                                     signal.SIGTERM)
    assert code == 143, text[-3000:]
    assert f'no checkpoint in {work} yet: starting from scratch' in text
    assert f'UnlabeledImageFolder: 32 images in {data}/pretrain' in text
    saved = [f for f in os.listdir(work) if f.startswith('preempted_iter_')]
    assert len(saved) == 1 and f'SIGTERM: saved {work / saved[0]}' in text
    stopped_at = int(saved[0][len('preempted_iter_'):-len('.pth')])
    assert 3 <= stopped_at < 1000

    result = subprocess.run(command + [f'train_cfg.max_iters={stopped_at + 2}'],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'--resume: resuming from {work / saved[0]}' in result.stdout
    assert re.search(rf'Iter\(train\) \[ *{stopped_at + 1}/{stopped_at + 2}\]', result.stdout)
    assert f'iter_{stopped_at + 2}.pth' in os.listdir(work)
    assert not any(f.startswith('preempted_') for f in os.listdir(work))


def test_kill_9_mid_run_and_a_torn_newest_checkpoint_cost_only_the_work_since_the_last_good_one(
        tmp_path, synthetic_root, repo_root):
    """SIGKILL a real CPU run between checkpoints (no handler runs), then tear its newest
    checkpoint as a kill during the write would: --resume names the torn file, continues
    from the checkpoint before it and finishes."""
    import signal

    work = tmp_path / 'work'
    command = [sys.executable, osp.join(repo_root, 'tools/train.py'), DEBUG_CONFIG,
               '--work-dir', str(work), '--resume', '--cfg-options',
               f'train_dataloader.dataset.data_root={synthetic_root}/',
               'train_dataloader.batch_size=4', 'default_hooks.logger.interval=1',
               'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=3']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    code, text = signal_at_iteration(command + ['train_cfg.max_iters=1000'], env, 5,
                                     signal.SIGKILL)
    assert code == -signal.SIGKILL, text[-3000:]
    assert {'iter_2.pth', 'iter_4.pth'} <= set(os.listdir(work))
    newest = work / 'iter_4.pth'
    newest.write_bytes(newest.read_bytes()[:newest.stat().st_size // 2])  # torn

    result = subprocess.run(command + ['train_cfg.max_iters=7'], capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f'--resume: skipping {newest}' in result.stdout
    assert f'--resume: resuming from {work / "iter_2.pth"}' in result.stdout
    assert re.search(r'Iter\(train\) \[ *3/7\]', result.stdout)
    assert 'iter_7.pth' in os.listdir(work)


def load_train_tool(repo_root):
    return load_tool('train')


@pytest.mark.parametrize('config,amp_dtype,expected', [
    ('configs/pretrain/densevit_s.py', None, ('GuardedAmpOptimWrapper', 'bfloat16')),
    ('configs/pretrain/densevit_s.py', 'float16', ('GuardedAmpOptimWrapper', 'float16')),
    ('configs/segmentation/fpn_densevit-s_4xb4-40k_ade20k-512x512.py', None,
     ('mmpretrain.GuardedAmpOptimWrapper', 'bfloat16')),
])
def test_amp_is_bfloat16_unless_float16_is_asked_for(repo_root, config, amp_dtype, expected):
    train = load_train_tool(repo_root)
    argv = [config, '--amp'] + (['--amp-dtype', amp_dtype] if amp_dtype else [])
    args = train.argparse.Namespace(**vars(_parse(train, argv)))
    cfg = train.merge_args(Config.fromfile(config), args)
    assert (cfg.optim_wrapper.type, cfg.optim_wrapper.dtype) == expected
    assert cfg.optim_wrapper.get('loss_scale') == ('dynamic' if amp_dtype == 'float16' else None)


def _parse(train, argv):
    old = sys.argv
    sys.argv = ['train.py'] + argv
    try:
        return train.parse_args()
    finally:
        sys.argv = old


def test_a_text_file_given_to_resume_is_named_before_anything_starts(tmp_path, repo_root):
    notes = tmp_path / 'epoch_200.pth'
    notes.write_text('<html>404 Not Found</html>\n')
    result = subprocess.run([sys.executable, osp.join(repo_root, 'tools/train.py'), DEBUG_CONFIG,
                             '--work-dir', str(tmp_path / 'work'), '--resume', str(notes)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1
    assert (f'tools/train.py: {notes} is not a readable PyTorch checkpoint: it is an HTML/XML '
            'file') in result.stderr


def test_sigterm_during_start_up_stops_after_one_iteration_with_a_checkpoint(tmp_path,
                                                                            synthetic_root):
    """Slurm's --signal=TERM@N can come while the job starts, before the hook is there."""
    import signal
    import time
    work = tmp_path / 'work'
    proc = subprocess.Popen([sys.executable, 'tools/train.py', DEBUG_CONFIG, '--work-dir',
                             str(work), '--cfg-options', f'train_dataloader.dataset.data_root='
                             f'{synthetic_root}/', 'train_dataloader.batch_size=4'],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=dict(os.environ, OMP_NUM_THREADS='1'))
    time.sleep(1)  # importing torch and mmengine
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 143, out[-3000:]
    assert 'SIGTERM came during start-up: stopping after the first iteration' in out
    assert f'SIGTERM: saved {work}/preempted_iter_1.pth after iteration 1' in out
    assert open(work / 'preempted').read() == f'{work}/preempted_iter_1.pth\n'


def photometric_config(tmp_path, synthetic_root, deferred, preprocessor, packed=None,
                       crop='RandomResizedCropWithBox', collate='default_collate'):
    """The debug model on views with the ImageNet config's augmentation, per image in the
    worker, its photometric part deferred to the data preprocessor, or (``crop=
    'DeferredResizedCrop'``) every per-pixel step; one worker process."""
    packed = deferred if packed is None else packed
    path = tmp_path / f'cfg_{deferred}_{preprocessor}_{packed}_{crop}_{collate}.py'
    cfg = Config.fromfile(write_test_config(path, synthetic_root))
    photometric = Config.fromfile('configs/pretrain/densevit_s.py').photometric_transforms
    crop = dict(type=crop, scale=96, crop_ratio_range=(0.2, 1.), backend='pillow')
    view = ([crop, dict(type='DeferredPhotometric', transforms=photometric)] if deferred else
            [crop, *photometric]) + [dict(type='RandomFlip', prob=0.5)]
    cfg.train_dataloader.dataset.pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='MultiViewWithGeometry', num_views=2, transforms=[view]),
        dict(type='PackInputs', algorithm_keys=['view_geometry'] + (
            ['view_photometric'] if packed else []))]
    cfg.train_dataloader.num_workers = 1
    cfg.train_dataloader.collate_fn = dict(type=collate)
    cfg.model.data_preprocessor = dict(cfg.model.get('data_preprocessor') or {},
                                       type=preprocessor)
    cfg.work_dir = str(tmp_path / f'work_{path.stem}')
    cfg.train_cfg.max_iters = 4
    cfg.randomness = dict(seed=0)
    cfg.dump(str(path))
    return cfg


def test_augmentation_on_the_device_trains_exactly_as_per_image(tmp_path, synthetic_root):
    records = []
    for options in (dict(deferred=False, preprocessor='SelfSupDataPreprocessor'),
                    dict(deferred=True, preprocessor='PhotometricDataPreprocessor'),
                    dict(deferred=True, preprocessor='DeviceAugmentDataPreprocessor',
                         crop='DeferredResizedCrop', collate='collate_source_images')):
        cfg = photometric_config(tmp_path, synthetic_root, **options)
        runner = Runner.from_cfg(cfg)
        check_device_augmentation(runner)
        runner.train()
        records.append(torch.load(osp.join(cfg.work_dir, 'record_rank0.pt'), weights_only=True))
    per_image = records[0]
    for device in records[1:]:
        assert sorted(device['losses']) == [0, 1, 2, 3]
        assert device['losses'] == per_image['losses']  # same views, same floats
        for name in ('head.loss_global', 'head.loss_dense'):
            assert torch.equal(device['queues'][name]['queue'],
                               per_image['queues'][name]['queue'])


@pytest.mark.parametrize('deferred,packed,preprocessor,crop,collate,message', [
    (True, False, 'PhotometricDataPreprocessor', None, None,
     "does not pack 'view_photometric'"),
    (True, True, 'SelfSupDataPreprocessor', None, None,
     'SelfSupDataPreprocessor, which would train without it'),
    (False, False, 'PhotometricDataPreprocessor', None, None, 'has no DeferredPhotometric'),
    (True, True, 'DeviceAugmentDataPreprocessor', 'DeferredResizedCrop', None,
     "samples are decoded images of any size: set train_dataloader.collate_fn="),
    (True, True, 'PhotometricDataPreprocessor', 'DeferredResizedCrop', 'collate_source_images',
     'PhotometricDataPreprocessor, which does not make views'),
    (True, True, 'DeviceAugmentDataPreprocessor', None, None,
     'but the training pipeline has no DeferredResizedCrop'),
    # scoped type names are the same types
    (True, True, 'PhotometricDataPreprocessor', 'mmpretrain.DeferredResizedCrop',
     'collate_source_images', 'PhotometricDataPreprocessor, which does not make views'),
])
def test_a_run_that_would_lose_or_fail_its_augmentation_is_refused_at_start(
        tmp_path, synthetic_root, deferred, packed, preprocessor, crop, collate, message):
    options = dict(crop=crop or 'RandomResizedCropWithBox', collate=collate or 'default_collate')
    cfg = photometric_config(tmp_path, synthetic_root, deferred, preprocessor, packed, **options)
    with pytest.raises(ValueError, match=message):
        check_device_augmentation(Runner.from_cfg(cfg))


def test_tools_train_checks_the_photometric_option_before_training(tmp_path, synthetic_root,
                                                                   repo_root):
    cfg = photometric_config(tmp_path, synthetic_root, True, 'PhotometricDataPreprocessor',
                             packed=False)
    result = subprocess.run(
        [sys.executable, osp.join(repo_root, 'tools/train.py'), cfg.filename],
        env=dict(os.environ, PYTHONPATH=repo_root), capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    assert "does not pack 'view_photometric'" in result.stderr
    assert 'Iter(train)' not in result.stdout + result.stderr


def test_two_processes_resume_mid_epoch_from_shards_exactly(tmp_path, synthetic_root, repo_root):
    """The pretraining from tar shards on 2 gloo processes (DDP's wrapper): SIGTERM to rank 1
    in the middle of epoch 2, --resume, and the run ends with an uninterrupted run's weights
    and queues."""
    shards = str(tmp_path / 'shards')
    load_tool('make_shards').main([osp.join(synthetic_root, 'pretrain'), shards,
                                   '--shard-size', '64KB'])
    pipeline = Config.fromfile(DEBUG_CONFIG).train_dataloader.dataset.pipeline

    def config(name, hooks=''):
        return write_test_config(
            tmp_path / f'{name}.py', synthetic_root,
            # 32 images, 2 processes x 4: 4 iterations per epoch
            train_cfg="dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=2)",
            default_hooks="dict(checkpoint=dict(by_epoch=True, interval=1))",
            custom_hooks=f"[dict(type='LambdaWarmupHook', start_iters=2), "
                         f"dict(type='RecordingHook'){hooks}]",
            train_dataloader=f"dict(batch_size=4, dataset=dict(_delete_=True, "
                             f"type='UnlabeledImageShards', data_root={shards!r}, "
                             f"skip_unreadable=True, pipeline={[dict(t) for t in pipeline]!r}))")

    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    result = dist_train(config('plain'), straight, repo_root)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    result = dist_train(config('fault', ", dict(type='FaultHook', fault='sigterm', iters=[5], "
                                        "rank=1)"), stopped, repo_root)
    assert f'SIGTERM: saved {stopped}/preempted_iter_6.pth after iteration 6' in \
        result.stdout + result.stderr
    result = dist_train(config('plain'), stopped, repo_root, '--resume')
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert 'resuming inside epoch 2: its first 2 of 4 iterations' in result.stdout
    end = torch.load(straight / 'epoch_2.pth', weights_only=True)['state_dict']
    again = torch.load(stopped / 'epoch_2.pth', weights_only=True)['state_dict']
    for key in end:  # weights, key encoder and both queues
        torch.testing.assert_close(again[key], end[key], rtol=1e-5, atol=1e-6)


def test_two_processes_train_the_device_views_as_the_per_image_pipeline(tmp_path, synthetic_root,
                                                                        repo_root):
    """Through tools/dist_train.sh on 2 gloo processes (MMDistributedDataParallel's own
    train_step calls the data preprocessor): the views made on the device give the per-image
    pipeline's losses and queues on both ranks."""
    records = {}
    for name, options in (('per_image', dict(deferred=False,
                                             preprocessor='SelfSupDataPreprocessor')),
                          ('device', dict(deferred=True,
                                          preprocessor='DeviceAugmentDataPreprocessor',
                                          crop='DeferredResizedCrop',
                                          collate='collate_source_images'))):
        cfg = photometric_config(tmp_path, synthetic_root, **options)
        work = tmp_path / f'dist_{name}'
        result = dist_train(cfg.filename, work, repo_root)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        records[name] = [torch.load(work / f'record_rank{r}.pt', weights_only=True)
                         for r in (0, 1)]
    for rank in (0, 1):
        per_image, device = records['per_image'][rank], records['device'][rank]
        assert sorted(device['losses']) == [0, 1, 2, 3]
        assert device['losses'] == per_image['losses']
        for key in ('head.loss_global', 'head.loss_dense'):
            assert torch.equal(device['queues'][key]['queue'], per_image['queues'][key]['queue'])
