"""How long a transfer run takes to resume early and late in its schedule, with the loop
that skips the batches done by index and with mmengine's, which loads them all again.

    python tools/benchmark_transfer_resume.py
        [--config configs/builtin/linear_densevit-mini_builtin-seg.py] [--iters 300]
        [--repeats 2] [--work-dir work_dirs/benchmark_transfer_resume]
        [--out benchmark_transfer_resume.json]

Generates the built-in ADE20K-layout set (64 training images of 128 px), trains the config
for ``--iters`` iterations with a checkpoint every tenth of them, then resumes from the
checkpoints at 10% and at 90% for one more iteration, with ``ResumableIterBasedTrainLoop``
and with mmengine's ``IterBasedTrainLoop``, in turn (A B A B ...).  Reported: the seconds
from the resumed run's start to the end of its one iteration (checkpoint loading and the
data placement included, the process start-up and the loader's shutdown not), medians over
``--repeats``, and the ratio of the late resume to the early one.
"""
import argparse
import gc
import itertools
import json
import os.path as osp
import statistics
import time

from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner

import densevit_mm  # noqa: F401
from densevit_mm.datasets import write_ade20k_layout

LOOPS = {'skip by index': 'mmpretrain.ResumableIterBasedTrainLoop',
         "mmengine's replay": 'IterBasedTrainLoop'}
RUN_IDS = itertools.count()


class FirstIterationEnd(Hook):
    """Notes when the resumed run's first iteration ends (the loader's shutdown after it
    is not the resume's cost)."""

    def __init__(self) -> None:
        self.at = None

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None) -> None:
        if self.at is None:
            self.at = time.perf_counter()


def runner_for(args, work_dir: str, max_iters: int, loop: str, resume_from: str = None):
    cfg = Config.fromfile(args.config)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'resume_{next(RUN_IDS)}'
    cfg.visualizer.name = f'visualizer_{cfg.experiment_name}'
    cfg.model.backbone.init_cfg = None
    cfg.randomness = dict(seed=0)
    cfg.train_dataloader.dataset.data_root = osp.join(args.work_dir, 'data',
                                                      'ADEChallengeData2016')
    cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    cfg.train_cfg = dict(type=loop, max_iters=max_iters)
    every = max(1, args.iters // 10)
    cfg.default_hooks.checkpoint = dict(
        type='mmpretrain.CrashSafeCheckpointHook', by_epoch=False, max_keep_ckpts=20,
        interval=every if resume_from is None else 10 ** 9, save_last=resume_from is None)
    cfg.default_hooks.logger = dict(type='LoggerHook', interval=10 ** 9)
    if resume_from:
        cfg.resume, cfg.load_from = True, resume_from
    return Runner.from_cfg(cfg)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', default='configs/builtin/linear_densevit-mini_builtin-seg.py')
    parser.add_argument('--iters', type=int, default=300)
    parser.add_argument('--repeats', type=int, default=2)
    parser.add_argument('--work-dir', default='work_dirs/benchmark_transfer_resume')
    parser.add_argument('--out', default='benchmark_transfer_resume.json')
    args = parser.parse_args()
    if args.iters < 10:
        parser.error('--iters must be at least 10 (checkpoints at every tenth)')
    write_ade20k_layout(osp.join(args.work_dir, 'data'), num_train=64, num_val=8, size=128)
    trained = osp.join(args.work_dir, 'trained')
    start = time.perf_counter()
    runner_for(args, trained, args.iters, LOOPS['skip by index']).train()
    print(f'trained {args.iters} iterations in {time.perf_counter() - start:.0f} s')
    every = max(1, args.iters // 10)
    points = {'10%': every, '90%': every * 9}
    seconds = {(loop, at): [] for loop in LOOPS for at in points}
    for repeat in range(args.repeats):
        for loop, at in seconds:
            work = osp.join(args.work_dir, f'resume_{repeat}_{len(seconds[loop, at])}_'
                            f'{LOOPS[loop].rsplit(".", 1)[-1]}_{points[at]}')
            runner = runner_for(args, work, points[at] + 1, LOOPS[loop],
                                osp.join(trained, f'iter_{points[at]}.pth'))
            end = FirstIterationEnd()
            runner.register_hook(end)
            gc.collect()  # an earlier run's loader ends here, not in the timed part
            start = time.perf_counter()
            runner.train()
            seconds[loop, at].append(end.at - start)
            del runner
    report = dict(config=args.config, iters=args.iters, repeats=args.repeats, results={})
    print(f'resume of {args.config} ({args.iters} iterations), then one iteration; seconds, '
          f'median of {args.repeats}')
    print('| loop | resumed at 10% | resumed at 90% | 90% / 10% |')
    print('|---|---|---|---|')
    for loop in LOOPS:
        early, late = (statistics.median(seconds[loop, at]) for at in points)
        report['results'][loop] = {at: statistics.median(seconds[loop, at]) for at in points}
        report['results'][loop]['ratio'] = late / early
        print(f'| {loop} | {early:.2f} | {late:.2f} | {late / early:.2f} |')
    with open(args.out, 'w') as f:
        json.dump(report, f, indent=2)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
