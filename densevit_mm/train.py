"""Train a DenseViT config (pretraining, linear probe, segmentation or detection): the
library's entry point, ``python -m densevit_mm.train CONFIG ...``, and what ``tools/train.py``
runs.

Same flags as mmpretrain / mmseg / mmdet's tools/train.py:
    python -m densevit_mm.train CONFIG [--work-dir DIR] [--resume [CKPT]] [--amp [--amp-dtype T]]
                                [--auto-scale-lr] [--no-validate] [--cfg-options key=value ...]
Exit status 143: stopped by SIGTERM after saving a checkpoint (continue with --resume).
"""
import argparse
import signal
import sys
from typing import Optional, Sequence


class EarlySigterm:
    """SIGTERM before the checkpoint hook takes over (Slurm's ``--signal`` may come while the
    job starts): remembered, so that training stops after its first iteration with a
    checkpoint (``CrashSafeCheckpointHook`` reads ``received``) instead of dying with none."""
    received = False

    def __call__(self, signum, frame) -> None:
        self.received = True


if __name__ == '__main__':
    # before the imports below that take seconds (``python -m`` has imported the package,
    # torch included, about 6 s on 2 cores, before this line: tools/train.py installs its
    # handler before any of it)
    signal.signal(signal.SIGTERM, EarlySigterm())

import torch.distributed
from mmengine.config import Config
from mmengine.dist import (broadcast_object_list, get_world_size, init_dist, is_distributed,
                           is_main_process)
from mmengine.model import is_model_wrapper
from mmengine.runner import Runner

from densevit_mm import compat
from densevit_mm.checkpoint import (ACCEPTABLE, CheckpointFileError, DiskFullError,
                                    ResumeMismatchError, ResumePlan, WorkDirBusyError,
                                    WorkDirLock, check_config_checkpoints, check_resume,
                                    load_checkpoint_file, plan_resume, run_record)
from densevit_mm.engine import (PREEMPTED_EXIT_CODE, TrainingPreempted,
                                check_device_augmentation, check_train_dataloader,
                                resolve_num_workers)
from densevit_mm.runner_args import add_runner_args, apply_runner_args

# --amp turns each optimizer wrapper into its autocast variant
AMP_WRAPPERS = {'OptimWrapper': 'AmpOptimWrapper', 'AmpOptimWrapper': 'AmpOptimWrapper',
                'GuardedOptimWrapper': 'GuardedAmpOptimWrapper',
                'GuardedAmpOptimWrapper': 'GuardedAmpOptimWrapper'}


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description='Train a DenseViT model')
    parser.add_argument('config', help='train config file path')
    parser.add_argument(
        '--resume', nargs='?', type=str, const='auto',
        help='resume from the given checkpoint; alone, from the newest readable checkpoint in '
        'the work dir, or from scratch if it has none (safe for requeued jobs)')
    parser.add_argument(
        '--accept-changes', nargs='+', choices=ACCEPTABLE, default=[],
        help='with --resume: continue although the global batch (processes x batch size) or '
        'the training set differs from the checkpoint\'s run (refused otherwise; another '
        'number of processes with the same global batch is always taken)')
    parser.add_argument('--amp', action='store_true',
                        help='mixed precision: bfloat16 autocast where the device has it')
    parser.add_argument('--amp-dtype', choices=['bfloat16', 'float16'], default='bfloat16',
                        help='autocast type for --amp (float16 adds loss scaling); bfloat16, the '
                        'default, is refused on GPUs without it')
    parser.add_argument('--no-validate', action='store_true',
                        help='skip validation during training')
    parser.add_argument('--auto-scale-lr', action='store_true',
                        help='scale the lr by actual batch size / auto_scale_lr.base_batch_size')
    add_runner_args(parser)
    return parser.parse_args(argv)


def merge_args(cfg: Config, args: argparse.Namespace) -> Config:
    if args.amp:
        wrapper = cfg.optim_wrapper.get('type', 'OptimWrapper')
        scope, _, name = wrapper.rpartition('.')
        if name not in AMP_WRAPPERS:
            raise ValueError(f'--amp needs optim_wrapper.type OptimWrapper or '
                             f'GuardedOptimWrapper, the config has {wrapper}')
        cfg.optim_wrapper.type = f'{scope}.{AMP_WRAPPERS[name]}' if scope else AMP_WRAPPERS[name]
        cfg.optim_wrapper.dtype = args.amp_dtype
        if args.amp_dtype == 'float16':
            cfg.optim_wrapper.setdefault('loss_scale', 'dynamic')
    if args.no_validate:
        cfg.val_cfg = cfg.val_dataloader = cfg.val_evaluator = None
    if args.auto_scale_lr:
        if 'auto_scale_lr' not in cfg:
            raise ValueError('--auto-scale-lr needs auto_scale_lr.base_batch_size in the config')
        cfg.auto_scale_lr.enable = True
    apply_runner_args(cfg, args)
    return cfg


def plan_start(cfg: Config, args: argparse.Namespace, prog: str) -> ResumePlan:
    """Where the run starts, decided on rank 0 for every rank (a shared file system may
    answer ranks differently), with a clear error for a file that is no checkpoint (the one
    to resume, load_from, or the backbone's init_cfg)."""
    outcome = [None]
    if is_main_process():
        try:
            plan = plan_resume(cfg.work_dir, args.resume)
            check_config_checkpoints(cfg, load_from=plan.checkpoint is None)
            outcome = [plan]
        except (CheckpointFileError, FileNotFoundError) as err:
            outcome = [str(err)]
    broadcast_object_list(outcome)
    if isinstance(outcome[0], str):
        raise SystemExit(f'{prog}: {outcome[0]}')
    return outcome[0]


def hold_work_dir(cfg: Config, prog: str) -> Optional[WorkDirLock]:
    """Rank 0 takes the work dir's lock for the life of the run; every rank stops with the
    holder's name when another run has it."""
    lock, outcome = None, [None]
    if is_main_process():
        lock = WorkDirLock(cfg.work_dir)
        try:
            lock.acquire()
        except WorkDirBusyError as err:
            outcome = [str(err)]
    broadcast_object_list(outcome)
    if outcome[0] is not None:
        raise SystemExit(f'{prog}: {outcome[0]}')
    return lock


def check_resumed_run(runner: Runner, checkpoint: str, accept, prog: str) -> None:
    """Refuse, before anything is loaded, a resume whose model, global batch or data set
    differ from the checkpoint's run (``densevit_mm/checkpoint/resume_check.py``)."""
    outcome = [None]
    if is_main_process():
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        record = run_record(runner.train_loop.dataloader, get_world_size())
        try:
            outcome = [check_resume(checkpoint, load_checkpoint_file(checkpoint, mmap=True),
                                    model.state_dict(), runner.cfg, record, accept)]
        except ResumeMismatchError as err:
            outcome = [str(err)]
    broadcast_object_list(outcome)
    if isinstance(outcome[0], str):
        raise SystemExit(f'{prog}: {outcome[0]}')
    for level, message in outcome[0] or []:
        runner.logger.log(level, message)


def main(argv: Optional[Sequence[str]] = None, prog: str = 'densevit_mm.train') -> None:
    """Train as the command line ``argv`` (default ``sys.argv[1:]``) says; ``prog`` starts
    each one-line error (``tools/train.py: ...`` when run by that script)."""
    args = parse_args(argv)
    cfg = merge_args(Config.fromfile(args.config), args)
    workers = resolve_num_workers(cfg)
    compat.setup_cpu_distributed(cfg)
    if cfg.launcher != 'none' and not is_distributed():  # the Runner then leaves it as it is
        init_dist(cfg.launcher, **cfg.get('env_cfg', {}).get('dist_cfg', {}))
    lock = hold_work_dir(cfg, prog)  # noqa: F841 (held until the process ends)
    plan = plan_start(cfg, args, prog)
    if plan.checkpoint is not None:
        cfg.resume, cfg.load_from = True, plan.checkpoint
    else:
        cfg.resume = False
    runner = Runner.from_cfg(cfg)
    if not any(getattr(hook, 'save_on_sigterm', False) for hook in runner.hooks):
        early = signal.signal(signal.SIGTERM, signal.SIG_DFL)  # no hook takes it over
        if getattr(early, 'received', False):
            sys.exit(PREEMPTED_EXIT_CODE)  # nothing trained yet, nothing to save
    for level, message in plan.notes:
        runner.logger.log(level, message)
    if workers:
        runner.logger.info(workers)
    check_train_dataloader(runner)
    if plan.checkpoint is not None:
        check_resumed_run(runner, plan.checkpoint, args.accept_changes, prog)
    check_device_augmentation(runner)
    compat.revert_sync_batchnorm_without_cuda(runner)
    try:
        runner.train()
    except TrainingPreempted as stop:
        runner.logger.warning(str(stop))
        sys.exit(PREEMPTED_EXIT_CODE)
    except DiskFullError as err:
        runner.logger.error(str(err))
        raise SystemExit(f'{prog}: {err}') from None
    finally:
        # A gloo group left for the interpreter's exit to tear down sometimes aborts the
        # process ("terminate called without an active exception", exit -6) after a
        # finished run: seen in 1 of 3 two-process CPU runs.
        if is_distributed():
            torch.distributed.destroy_process_group()


if __name__ == '__main__':
    main()
