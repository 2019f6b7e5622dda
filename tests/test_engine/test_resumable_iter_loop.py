"""Transfer runs (mmseg, mmdet) resumed without replaying their data: ResumableIterBasedTrainLoop
on the built-in linear-probe and FCOS configs, against uninterrupted runs."""
import itertools
import os
import os.path as osp

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import DefaultSampler, InfiniteSampler
from mmengine.runner import Runner

import mmdet.datasets  # noqa: F401  (registers AspectRatioBatchSampler)
import tests.fixtures.count_loads  # noqa: F401  (registers CountLoads)
from densevit_mm.checkpoint import load_checkpoint_file
from densevit_mm.datasets import ResumableBatchSampler, write_ade20k_layout, write_coco_layout

SEG = 'configs/builtin/linear_densevit-mini_builtin-seg.py'
DET = 'configs/builtin/fcos-frozen_densevit-mini_builtin-det.py'
RUN_IDS = itertools.count()


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('transfer_resume')
    write_ade20k_layout(str(root / 'ade'), num_train=6, num_val=2, size=64)
    write_coco_layout(str(root / 'coco'), num_train=6, num_val=2, size=64)
    return root


def runner_for(config, data, work_dir, max_iters, workers=0, resume=False, loop=None):
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    cfg.experiment_name = f'resume_{next(RUN_IDS)}'
    cfg.visualizer.name = f'visualizer_{cfg.experiment_name}'
    cfg.model.backbone.init_cfg = None
    cfg.randomness = dict(seed=0)
    loader = cfg.train_dataloader
    if config == SEG:
        loader.dataset.data_root = str(data / 'ade' / 'ADEChallengeData2016')
    else:
        loader.dataset.data_root = str(data / 'coco') + '/'
    pipeline = loader.dataset.pipeline
    pipeline.insert(len(pipeline) - 1, dict(type='CountLoads', log=str(work_dir / 'loads.txt')))
    loader.batch_size, loader.num_workers = 2, workers
    loader.persistent_workers = workers > 0
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg = dict(type=loop or cfg.train_cfg.type, max_iters=max_iters)
    cfg.param_scheduler = []  # the schedule's length must not depend on max_iters
    cfg.default_hooks.checkpoint = dict(type='mmpretrain.CrashSafeCheckpointHook', by_epoch=False,
                                        interval=3, max_keep_ckpts=5)
    if resume:
        cfg.resume, cfg.load_from = True, str(work_dir / 'iter_3.pth')
    return Runner.from_cfg(cfg)


def loads(work_dir):
    return open(work_dir / 'loads.txt').read().splitlines()


@pytest.mark.parametrize('config', [SEG, DET])
def test_a_resumed_transfer_run_reads_no_batch_twice_and_ends_where_an_uninterrupted_one_does(
        tmp_path, data, config):
    """6 iterations of 2 images straight, or 3 then resumed: the resumed run loads only its
    own 3 batches -- the very images and augmentations of the straight run's iterations
    3-5 -- and ends with its weights.  (The detection set's 6 images make 3 batches per pass
    of mmdet's DefaultSampler and AspectRatioBatchSampler: the resume starts a new pass.)"""
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    runner_for(config, data, straight, 6).train()
    runner_for(config, data, stopped, 3).train()
    assert len(loads(stopped)) == 3 * 2
    runner = runner_for(config, data, stopped, 6, resume=True)
    runner.train()
    resumed = loads(stopped)[3 * 2:]
    assert resumed == loads(straight)[3 * 2:]  # same images, same augmented pixels
    assert len(set(loads(straight))) > 6  # the augmentation varies
    end = load_checkpoint_file(str(straight / 'iter_6.pth'))['state_dict']
    again = load_checkpoint_file(str(stopped / 'iter_6.pth'))['state_dict']
    assert end.keys() == again.keys()
    for key in end:
        torch.testing.assert_close(again[key], end[key], rtol=0, atol=0)
    sampler = runner.train_dataloader.batch_sampler.sampler
    assert isinstance(sampler, InfiniteSampler if config == SEG else DefaultSampler)


def test_mmengines_loop_loads_every_batch_again_on_resume(tmp_path, data):
    """What the resumable loop saves: IterBasedTrainLoop replays (loads) the 3 batches."""
    work = tmp_path / 'work'
    runner_for(SEG, data, work, 3, loop='IterBasedTrainLoop').train()
    runner_for(SEG, data, work, 6, resume=True, loop='IterBasedTrainLoop').train()
    assert len(loads(work)) == 3 * 2 + 6 * 2


def test_with_a_worker_process_the_resumed_run_ends_with_the_same_weights(tmp_path, data):
    """Seeds per sample: the worker process that makes a sample does not matter."""
    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    runner_for(SEG, data, straight, 6, workers=1).train()
    runner_for(SEG, data, stopped, 3, workers=1).train()
    runner_for(SEG, data, stopped, 6, workers=1, resume=True).train()
    end = load_checkpoint_file(str(straight / 'iter_6.pth'))['state_dict']
    again = load_checkpoint_file(str(stopped / 'iter_6.pth'))['state_dict']
    for key in end:
        torch.testing.assert_close(again[key], end[key], rtol=0, atol=0)


class Ratios:
    """A data set of 10 images, the even ones wider than high."""

    def __len__(self):
        return 10

    def get_data_info(self, i):
        return dict(width=20 if i % 2 == 0 else 10, height=15)


def test_start_at_replays_indices_only_and_lands_where_the_stream_is():
    """Batches of a finite sampler through several passes, and of an infinite one: after
    start_at(n) the next batch is the (n + 1)-th of an uninterrupted stream, seeds included."""
    for sampler_cls, batch_sampler in ((DefaultSampler, dict(type='mmdet.AspectRatioBatchSampler')),
                                       (InfiniteSampler, None)):
        def fresh():
            return ResumableBatchSampler(sampler_cls(Ratios(), shuffle=True, seed=3),
                                         batch_size=4, batch_sampler=batch_sampler)

        stream, epoch = [], 0
        straight = fresh()
        while len(stream) < 12:  # as mmengine's _InfiniteDataloaderIterator goes through passes
            straight.sampler.set_epoch(epoch)
            stream += list(itertools.islice(iter(straight), 12 - len(stream)))
            epoch += 1
        for n in (0, 1, 3, 4, 7):
            resumed = fresh()
            passes = resumed.start_at(n)
            assert next(iter(resumed)) == stream[n], (sampler_cls.__name__, n)
            if sampler_cls is InfiniteSampler:
                assert passes == 0
    assert np.unique([s for batch in stream for _, s in batch]).size == sum(map(len, stream))


def test_a_sampler_that_draws_seeds_itself_is_refused():
    from densevit_mm.datasets import ResumableSampler
    from densevit_mm.datasets.seeded_dataset import SeededDataset
    with pytest.raises(TypeError, match='already draws seeds'):
        ResumableBatchSampler(ResumableSampler(SeededDataset(list(range(4)))), batch_size=2)


def test_two_processes_resume_without_replay_and_end_where_an_uninterrupted_run_does(
        tmp_path, data, repo_root):
    """The same through tools/dist_train.sh on 2 CPU processes (gloo, DDP's wrapper):
    each rank skips its own 3 batches by index, loads only its share of the rest, and the
    run ends with the straight run's weights."""
    import subprocess
    import sys

    from tests.test_tools.test_train import free_port

    pipeline = Config.fromfile(SEG).train_dataloader.dataset.pipeline

    def train(work, iters, *args):
        config = tmp_path / f'{work.name}.py'
        counted = pipeline[:-1] + [dict(type='CountLoads', log=str(work / 'loads.txt'))] + \
            pipeline[-1:]
        config.write_text('\n'.join([
            f'_base_ = {osp.abspath(SEG)!r}',
            "custom_imports = dict(imports=['densevit_mm', 'densevit_mm.downstream', "
            "'tests.fixtures.count_loads'], allow_failed_imports=False)",
            'model = dict(backbone=dict(init_cfg=None))',
            'randomness = dict(seed=0)',
            f"train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, "
            f"dataset=dict(data_root={str(data / 'ade' / 'ADEChallengeData2016')!r}, "
            f"pipeline={[dict(t) for t in counted]!r}))",
            'val_cfg = None', 'val_dataloader = None', 'val_evaluator = None',
            'param_scheduler = []',
            "default_hooks = dict(checkpoint=dict(interval=3, max_keep_ckpts=5))",
            f'train_cfg = dict(max_iters={iters}, val_interval=1000)',
        ]) + '\n')
        env = dict(os.environ, PORT=str(free_port()), PYTHON=sys.executable,
                   OMP_NUM_THREADS='1', PYTHONPATH=repo_root)
        result = subprocess.run([osp.join(repo_root, 'tools/dist_train.sh'), str(config), '2',
                                 '--work-dir', str(work), *args],
                                env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        return result.stdout

    straight, stopped = tmp_path / 'straight', tmp_path / 'stopped'
    train(straight, 6)
    train(stopped, 3)
    out = train(stopped, 6, '--resume')
    assert 'resuming at iteration 3: its 3 batches were skipped by index' in out
    assert len(loads(stopped)) == 2 * 2 * 6  # 2 ranks x 2 images x (3 + 3) iterations
    assert sorted(loads(stopped)) == sorted(loads(straight))
    end = load_checkpoint_file(str(straight / 'iter_6.pth'))['state_dict']
    again = load_checkpoint_file(str(stopped / 'iter_6.pth'))['state_dict']
    for key in end:
        torch.testing.assert_close(again[key], end[key], rtol=0, atol=0)
