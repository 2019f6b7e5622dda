"""Whole training runs on the debug config (CPU) meeting the faults of a run of days:
a non-finite key, a diverging model, a kill during a save, SIGTERM, bad images, a batch
larger than the data set."""
import itertools
import re
import os
import os.path as osp

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import tests.fixtures.fault_hook  # noqa: F401  (registers FaultHook)
import tests.fixtures.recording_hook  # noqa: F401  (registers RecordingHook)
from densevit_mm.checkpoint import load_checkpoint_file, non_finite_tensors, plan_resume
from densevit_mm.engine import TrainingPreempted, check_train_dataloader
from tests.conftest import load_tool
from tests.fixtures.fault_hook import FaultHook

DEBUG_CONFIG = 'configs/pretrain/densevit_debug.py'
RUN_IDS = itertools.count()


def make_runner(work_dir, data_root, hooks=(), iters=6, epochs=None, interval=2, keep=2,
                batch_size=4, resume=None, data_prefix='pretrain', shards=None, **overrides):
    """A debug-config runner on ``data_root/data_prefix``, or on the shard folder
    ``shards`` (UnlabeledImageShards) when given."""
    cfg = Config.fromfile(DEBUG_CONFIG)
    cfg.work_dir = str(work_dir)
    # logger and visualizer are process-wide instances found by name: one per run
    cfg.experiment_name = f'run_{next(RUN_IDS)}'
    cfg.visualizer.name = f'visualizer_{cfg.experiment_name}'
    cfg.train_dataloader.batch_size = batch_size
    if shards:
        cfg.train_dataloader.dataset = dict(type='UnlabeledImageShards', data_root=shards,
                                            skip_unreadable=True,
                                            pipeline=cfg.train_dataloader.dataset.pipeline)
    else:
        cfg.train_dataloader.dataset.data_root = data_root
        cfg.train_dataloader.dataset.data_prefix = data_prefix
    cfg.custom_hooks = [dict(type='LambdaWarmupHook', start_iters=2),
                        dict(type='RecordingHook'), *hooks]
    by_epoch = epochs is not None
    cfg.train_cfg = (dict(type='EpochBasedTrainLoop', max_epochs=epochs) if by_epoch else
                     dict(type='IterBasedTrainLoop', max_iters=iters))
    cfg.log_processor = dict(by_epoch=by_epoch)
    cfg.param_scheduler = [dict(type='LinearLR', start_factor=0.1, by_epoch=False, begin=0,
                                end=4)]
    cfg.default_hooks.checkpoint = dict(type='CrashSafeCheckpointHook', by_epoch=by_epoch,
                                        interval=interval, max_keep_ckpts=keep)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=1)
    cfg.merge_from_dict(overrides)
    plan = plan_resume(cfg.work_dir, resume)
    cfg.resume, cfg.load_from = plan.checkpoint is not None, plan.checkpoint
    return Runner.from_cfg(cfg)


def record(work_dir):
    return torch.load(osp.join(work_dir, 'record_rank0.pt'), weights_only=True)


def log_text(work_dir):
    logs = [osp.join(root, f) for root, _, files in os.walk(work_dir) for f in files
            if f.endswith('.log')]
    return ''.join(open(p).read() for p in sorted(logs))


def test_an_infinite_key_costs_one_step_and_nothing_else(tmp_path, synthetic_root):
    """The issue's run: inf in one global key at iteration 3 used to log nan to the end."""
    work = tmp_path / 'work'
    FaultHook.snapshots.clear()
    make_runner(work, synthetic_root, [dict(type='FaultHook', fault='inf_key', iters=[3])],
                iters=8).train()
    rec = record(work)
    losses = rec['losses']
    assert [i for i in range(8) if rec['applied'][i] is False] == [3]
    # the skipped step logs no nan: the log holds the other steps' values, in order
    assert rec['logged']['train/loss'] == [losses[i]['loss'] for i in range(8) if i != 3]
    assert all(torch.isfinite(torch.tensor(losses[i]['loss'])) for i in range(8) if i != 3)
    assert not torch.isfinite(torch.tensor(losses[3]['loss']))
    snap = FaultHook.snapshots[3]
    assert all(torch.equal(snap['before'][n], snap['after'][n]) for n in snap['before'])
    for it in (6, 8):
        state = load_checkpoint_file(str(work / f'iter_{it}.pth'))
        assert non_finite_tensors(state['state_dict']) == []
        assert all(torch.isfinite(s).all() for group in state['optimizer']['state'].values()
                   for s in group.values() if torch.is_tensor(s))
    text = log_text(work)
    assert 'iteration 4: non-finite loss or gradients' in text  # 1-based, as the log lines
    assert 'step skipped, weights, optimizer state and queues unchanged (1 in a row' in text


def test_a_diverged_run_stops_naming_the_last_good_checkpoint(tmp_path, synthetic_root):
    work = tmp_path / 'work'
    runner = make_runner(work, synthetic_root,
                         [dict(type='FaultHook', fault='inf_key', iters=range(4, 20))],
                         iters=20, optim_wrapper=dict(max_consecutive_skips=3))
    # iterations 5-7 (1-based) are skipped; the checkpoint after 6 holds iteration 4's weights
    with pytest.raises(FloatingPointError, match=r'iterations 5-7: 3 training steps in a row .*'
                                                 r'last good checkpoint is .*iter_6.pth'):
        runner.train()
    assert sorted(f for f in os.listdir(work) if f.endswith('.pth')) == ['iter_4.pth',
                                                                         'iter_6.pth']


def test_no_checkpoint_is_written_with_nan_weights(tmp_path, synthetic_root):
    work = tmp_path / 'work'
    runner = make_runner(work, synthetic_root,
                         [dict(type='FaultHook', fault='nan_weight', iters=[4])], iters=8, keep=1)
    # poisoned behind the optimizer's back, the weight reaches the key encoder too
    with pytest.raises(FloatingPointError,
                       match=r'not saving a checkpoint after iteration 6: 2 tensor\(s\) hold '
                             r'nan or inf \(backbone.layers.0.attn.qkv.weight, '
                             r'target_encoder.module.0.layers.0.attn.qkv.weight\) .*last good '
                             r'checkpoint is .*iter_4.pth'):
        runner.train()
    # rotation (max_keep_ckpts=1) kept the good one; the pointer still names it
    assert [f for f in os.listdir(work) if 'pth' in f] == ['iter_4.pth']
    assert open(work / 'last_checkpoint').read().endswith('iter_4.pth')
    assert non_finite_tensors(load_checkpoint_file(str(work / 'iter_4.pth'))['state_dict']) == []


def test_a_kill_during_a_save_leaves_the_previous_checkpoint(tmp_path, synthetic_root,
                                                             monkeypatch):
    from mmengine.fileio import LocalBackend
    work = tmp_path / 'work'
    put = LocalBackend.put

    def killed_halfway(self, obj, filepath):
        if '/.iter_4.pth.' in filepath and filepath.endswith('.partial'):
            put(self, obj[:len(obj) // 2], filepath)
            raise KeyboardInterrupt('killed while saving')
        put(self, obj, filepath)

    monkeypatch.setattr(LocalBackend, 'put', killed_halfway)
    with pytest.raises(KeyboardInterrupt):
        make_runner(work, synthetic_root, iters=6, keep=1).train()
    pths = sorted(f for f in os.listdir(work) if f.endswith('.pth'))
    assert pths == ['iter_2.pth']  # mmengine would have deleted it before writing iter_4
    assert open(work / 'last_checkpoint').read().endswith('iter_2.pth')
    load_checkpoint_file(str(work / 'iter_2.pth'))
    monkeypatch.setattr(LocalBackend, 'put', put)
    # the requeued job resumes from it, and its start removes the torn file
    make_runner(work, synthetic_root, iters=6, keep=1, resume='auto').train()
    assert sorted(f for f in os.listdir(work) if 'pth' in f) == ['iter_6.pth']
    assert sorted(record(work)['losses']) == [2, 3, 4, 5]


def test_rotation_keeps_the_newest_complete_checkpoints(tmp_path, synthetic_root):
    work = tmp_path / 'work'
    make_runner(work, synthetic_root, iters=8, keep=2).train()
    assert sorted(f for f in os.listdir(work) if 'pth' in f) == ['iter_6.pth', 'iter_8.pth']
    assert open(work / 'last_checkpoint').read() == str(work / 'iter_8.pth')


@pytest.fixture(scope='module')
def synthetic_shards(synthetic_root, tmp_path_factory):
    """The 32 images of ``synthetic_root/pretrain`` in shards of at most 64 KB."""
    load_tool('make_shards').main([osp.join(synthetic_root, 'pretrain'),
                                   str(tmp_path_factory.mktemp('shards') / 'out'),
                                   '--shard-size', '64KB'])
    return str(tmp_path_factory.getbasetemp() / 'shards0' / 'out')


@pytest.mark.parametrize('source', ['folder', 'shards'])
def test_sigterm_saves_mid_epoch_and_the_resumed_run_continues_exactly(tmp_path, synthetic_root,
                                                                       synthetic_shards, source):
    """Random augmentations, an epoch-based loop, SIGTERM in the middle of epoch 2: the
    resumed run sees the same images and views and reaches the same state, reading a folder
    or its shards."""
    shards = synthetic_shards if source == 'shards' else None
    # 32 images / batch 4: 8 iterations per epoch
    kwargs = dict(epochs=2, interval=1, keep=3, shards=shards)
    straight = tmp_path / 'straight'
    make_runner(straight, synthetic_root, **kwargs).train()

    stopped = tmp_path / 'stopped'
    with pytest.raises(TrainingPreempted, match='saved .*preempted_iter_11.pth after iteration '
                                                '11'):
        make_runner(stopped, synthetic_root, [dict(type='FaultHook', fault='sigterm', iters=[10])],
                    **kwargs).train()
    assert open(stopped / 'last_checkpoint').read().endswith('preempted_iter_11.pth')
    meta = load_checkpoint_file(str(stopped / 'preempted_iter_11.pth'))['meta']
    assert (meta['epoch'], meta['iter']) == (1, 11)

    make_runner(stopped, synthetic_root, resume='auto', **kwargs).train()
    a, b = record(straight), record(stopped)
    assert sorted(b['losses']) == list(range(11, 16))
    for it in range(11, 16):
        assert b['losses'][it] == pytest.approx(a['losses'][it], rel=1e-5), it
    for name in a['queues']:
        torch.testing.assert_close(b['queues'][name]['queue'], a['queues'][name]['queue'],
                                   rtol=1e-5, atol=1e-6)
    end_a = load_checkpoint_file(str(straight / 'epoch_2.pth'))['state_dict']
    end_b = load_checkpoint_file(str(stopped / 'epoch_2.pth'))['state_dict']
    for key in end_a:
        torch.testing.assert_close(end_b[key], end_a[key], rtol=1e-5, atol=1e-6)
    # superseded by epoch_2.pth, with the marker for job scripts
    assert not any(f.startswith('preempted') for f in os.listdir(stopped))
    assert 'resuming inside epoch 2: its first 3 of 8 iterations' in log_text(stopped)


@pytest.mark.parametrize('loop,at,expected,epoch', [
    # a regular checkpoint falls on the stopping iteration: it is the one resumed from
    (dict(iters=8, interval=2), 3, 'iter_4.pth', 0),
    # the first iteration after an epoch checkpoint still gets its own save
    (dict(epochs=2, interval=1), 8, 'preempted_iter_9.pth', 1),
    # on an epoch's last iteration the epoch ends first (its checkpoint, schedulers, hooks)
    (dict(epochs=2, interval=1), 7, 'epoch_1.pth', 1),
    (dict(epochs=3, interval=3), 7, 'preempted_iter_8.pth', 1),
    # inside a gradient accumulation cycle: after its update
    (dict(iters=8, interval=5, optim_wrapper=dict(accumulative_counts=2)), 2,
     'preempted_iter_4.pth', 0),
])
def test_sigterm_stops_at_the_right_boundary(tmp_path, synthetic_root, loop, at, expected, epoch):
    work = tmp_path / 'work'
    with pytest.raises(TrainingPreempted, match=f'saved .*/{expected} after iteration'):
        make_runner(work, synthetic_root, [dict(type='FaultHook', fault='sigterm', iters=[at])],
                    keep=5, **loop).train()
    assert open(work / 'last_checkpoint').read() == str(work / expected)
    assert not any(f.startswith('preempted_') and f != expected for f in os.listdir(work))
    meta = load_checkpoint_file(str(work / expected))['meta']
    assert meta['epoch'] == epoch  # the epoch to continue in


def test_a_second_sigterm_ends_the_process_at_once(monkeypatch):
    import signal

    from densevit_mm.engine import CrashSafeCheckpointHook
    from densevit_mm.engine.hooks import crash_safe_checkpoint_hook as module
    killed = []
    monkeypatch.setattr(module.os, 'kill', lambda pid, sig: killed.append((pid, sig)))
    hook = CrashSafeCheckpointHook()
    previous = signal.getsignal(signal.SIGTERM)
    hook._previous_handler = signal.signal(signal.SIGTERM, hook._on_sigterm)
    try:
        hook._on_sigterm(signal.SIGTERM, None)
        assert hook._sigterm and killed == []
        hook._on_sigterm(signal.SIGTERM, None)
        assert killed == [(os.getpid(), signal.SIGTERM)]
        assert signal.getsignal(signal.SIGTERM) is previous  # the default action again
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_a_resumed_run_keeps_the_sampler_seed_of_the_run_it_continues(tmp_path, synthetic_root):
    work = tmp_path / 'work'
    unseeded = dict(randomness=dict(seed=None))  # the sampler draws its seed at random
    with pytest.raises(TrainingPreempted):
        make_runner(work, synthetic_root, [dict(type='FaultHook', fault='sigterm', iters=[3])],
                    epochs=2, **unseeded).train()
    saved = load_checkpoint_file(str(work / 'preempted_iter_4.pth'))['message_hub']
    seed = saved['runtime_info']['resumable_sampler_seed']
    runner = make_runner(work, synthetic_root, epochs=2, resume='auto', **unseeded)
    runner.train()
    assert runner.train_dataloader.sampler.seed == seed


def test_unreadable_images_are_skipped_logged_once_and_listed(tmp_path, folder_with_bad_images):
    root, _, bad = folder_with_bad_images
    work = tmp_path / 'work'
    # the pretraining configs list UnreadableImageHook and set skip_unreadable=True
    make_runner(work, root, epochs=2, data_prefix='',
                default_hooks=dict(unreadable_images=dict(max_share=0.2))).train()
    text = log_text(work)
    for path in bad:
        assert text.count(f'skipped unreadable training image {path}:') == 1
    listed = (work / 'unreadable_images.txt').read_text().splitlines()
    assert sorted(line.split('\t')[0] for line in listed) == sorted(bad)
    assert '3 of 19 training images were unreadable and skipped so far' in text
    # checkpoints carry the list, so a resumed run goes on counting
    hub = load_checkpoint_file(str(work / 'epoch_2.pth'))['message_hub']
    assert sorted(hub['runtime_info']['unreadable_images']) == sorted(bad)


def test_too_many_unreadable_images_stop_the_run_with_the_list(tmp_path, folder_with_bad_images):
    root, _, bad = folder_with_bad_images
    runner = make_runner(tmp_path / 'work', root, epochs=1, data_prefix='',
                         default_hooks=dict(unreadable_images=dict(max_share=0.1)))
    with pytest.raises(RuntimeError, match=r'3 training images are unreadable, more than '
                                           r'max_share=0.1 of the 19 images allows \(1\)'):
        runner.train()


def test_a_batch_larger_than_the_data_set_is_refused_with_both_numbers(tmp_path,
                                                                       synthetic_root):
    runner = make_runner(tmp_path / 'work', synthetic_root, epochs=1, batch_size=40)
    with pytest.raises(ValueError, match=r'batch_size=40 per process x 1 process\(es\) = 40 '
                                         r'images per step, but the training set .* has only '
                                         r'32 images'):
        check_train_dataloader(runner)


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB file system: room for one checkpoint of the debug model (11.6 MB), not two."""
    import subprocess
    if os.geteuid() != 0:
        pytest.skip('mounting a small tmpfs needs root')
    mount = tmp_path / 'disk'
    mount.mkdir()
    result = subprocess.run(['mount', '-t', 'tmpfs', '-o', 'size=16m', 'tmpfs', str(mount)],
                            capture_output=True, text=True)
    if result.returncode:
        pytest.skip(f'cannot mount a tmpfs here: {result.stderr.strip()}')
    yield mount
    subprocess.run(['umount', '-l', str(mount)])


def test_a_full_disk_is_a_clean_stop_naming_the_file_the_space_and_the_last_checkpoint(
        small_disk, synthetic_root, repo_root):
    import subprocess
    import sys
    work = small_disk / 'work'
    command = [sys.executable, 'tools/train.py', DEBUG_CONFIG, '--work-dir', str(work),
               '--resume', '--cfg-options', f'train_dataloader.dataset.data_root={synthetic_root}/',
               'train_dataloader.batch_size=4', 'train_cfg.max_iters=6',
               'default_hooks.checkpoint.interval=2', 'default_hooks.checkpoint.max_keep_ckpts=1']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    full = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert full.returncode == 1, full.stderr[-3000:]
    assert 'Traceback' not in full.stderr
    size = osp.getsize(work / 'iter_2.pth') / 2**20
    assert re.fullmatch(
        rf'tools/train.py: no space left to save {work}/iter_4.pth \(No space left on device\): '
        rf'the partial file is removed; a checkpoint needs about {size:.1f} MB, \d+\.\d [KM]B '
        rf'are free there. The last good checkpoint is {work}/iter_2.pth: free at least '
        r'\d+\.\d MB \(or point --work-dir elsewhere\) and continue with --resume.',
        full.stderr.strip().splitlines()[-1])
    assert sorted(f for f in os.listdir(work) if 'pth' in f) == ['iter_2.pth']
    assert not [f for f in os.listdir(work) if f.endswith('.partial')]
    assert open(work / 'last_checkpoint').read() == str(work / 'iter_2.pth')

    subprocess.run(['mount', '-o', 'remount,size=64m', str(small_disk)], check=True)
    resumed = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f'--resume: resuming from {work}/iter_2.pth' in resumed.stdout
    assert sorted(f for f in os.listdir(work) if 'pth' in f) == ['iter_6.pth']


@pytest.mark.parametrize('epochs', [None, 2])
def test_sigterm_in_the_last_iteration_finishes_the_run(tmp_path, synthetic_root, epochs):
    """Resumed at its end, a run would skip its final validation (no metric in the table)."""
    work = tmp_path / 'work'
    last = 8 * epochs - 1 if epochs else 5  # 32 images in batches of 4
    runner = make_runner(work, synthetic_root, [dict(type='FaultHook', fault='sigterm',
                                                     iters=[last])],
                         iters=6, epochs=epochs, interval=100, batch_size=4)
    runner.train()  # no TrainingPreempted
    assert runner.iter == last + 1
    assert sorted(record(work)['losses']) == list(range(last + 1))
    assert 'SIGTERM in the last iteration: finishing the run' in log_text(work)
    assert not osp.exists(work / 'preempted')
    assert not [f for f in os.listdir(work) if f.startswith('preempted_iter_')]
