"""Checkpoints that survive kills, divergence and preemption."""
import glob
import os
import os.path as osp
import signal
import threading

import torch
from mmengine.dist import all_reduce, barrier, get_world_size, is_main_process
from mmengine.fileio import LocalBackend
from mmengine.hooks import CheckpointHook
from mmengine.model import is_model_wrapper
from mmengine.runner import EpochBasedTrainLoop
from mmpretrain.registry import HOOKS

from densevit_mm.checkpoint.checkpoint_file import (NO_SPACE, atomic_move, atomic_write_text,
                                                   describe_non_finite, disk_full_error)
from densevit_mm.checkpoint.resume_check import run_record
from densevit_mm.checkpoint.work_dir import remove_stale_temporaries, temporary_path
from densevit_mm.datasets.samplers import ResumableSampler

PREEMPTED_EXIT_CODE = 143  # 128 + SIGTERM, what the shell reports for a process it ended
PREEMPTED_MARKER = 'preempted'  # written to the work dir, naming the checkpoint


class TrainingPreempted(Exception):
    """Training stopped on SIGTERM after saving a checkpoint; resume with ``--resume``."""


def _iters_per_epoch(loop: EpochBasedTrainLoop) -> int:
    # not len(loop.dataloader): that is shorter in an epoch a resumed run entered part-way
    return loop.max_iters // loop.max_epochs


@HOOKS.register_module()
class CrashSafeCheckpointHook(CheckpointHook):
    """mmengine's ``CheckpointHook`` (same arguments) for runs that last days.

    - Every checkpoint is written under a temporary name in the same folder, flushed to disk
      and renamed into place; ``last_checkpoint`` too.  A kill mid-save leaves the previous
      files as they were.
    - The checkpoints that ``max_keep_ckpts`` retires are deleted only after the new one is
      complete (mmengine deletes first).
    - A model whose weights or buffers hold ``nan`` / ``inf`` is never saved: the hook stops
      training naming the tensors and the last good checkpoint, so rotation cannot replace
      good checkpoints by bad ones.
    - ``save_on_sigterm``: on SIGTERM (Slurm's preemption and time-limit signal) training
      saves ``preempted_iter_<N>.pth`` at the next iteration boundary (the end of the epoch
      when that is the next boundary, after the epoch's own hooks; the end of a gradient
      accumulation cycle), writes ``<work_dir>/preempted`` naming it, waits for every rank
      and stops with :class:`TrainingPreempted` (``tools/train.py`` exits with status 143;
      a launcher may end the other ranks by signal once one has exited, the files being in
      place by then).  The next regular checkpoint deletes both files.
      In the last iteration the run finishes instead (a run resumed at its end would skip
      its final validation).  A second SIGTERM ends the process at once, as without the hook.  A SIGTERM that a
      previous handler with a true ``received`` attribute (``tools/train.py``'s, installed
      at its start) caught before training counts as one caught here.  With
      ``GuardedOptimWrapper`` the ranks agree on the stop in the collective of the step's
      own decision (:attr:`GuardedOptimWrapper.stop_agreed`); with another optimizer wrapper
      this hook all-reduces the flag itself after every iteration.
    - A run resumed from a mid-epoch checkpoint of an epoch-based loop leaves out the part of
      that epoch already trained on (with ``ResumableSampler``, whose seed the checkpoints
      keep), so it sees the images and augmentations an uninterrupted run would have seen.
      (mmengine's iteration-based loop replays its data iterator on resume instead; it
      repeats the order when ``randomness.seed`` is fixed, as in these configs.)

    ``save_best`` checkpoints are written as mmengine writes them.

    Args:
        save_on_sigterm (bool): Save and stop on SIGTERM. Defaults to True.
        **kwargs: Arguments of mmengine's ``CheckpointHook``.
    """

    def __init__(self, *args, save_on_sigterm: bool = True, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.save_on_sigterm = save_on_sigterm
        self._sigterm = False
        self._stop_at_epoch_end = False
        self._previous_handler = None
        self._saved_after = None  # iterations done when this hook last wrote a checkpoint
        self._optim_wrapper = None  # a GuardedOptimWrapper, which agrees on the stop
        self._run_record = None

    # ----- start and end of training -------------------------------------------------------

    def before_train(self, runner) -> None:
        super().before_train(runner)
        if not isinstance(self.file_backend, LocalBackend):
            raise TypeError(f'CrashSafeCheckpointHook writes to file systems (local or shared); '
                            f'{self.out_dir} needs {type(self.file_backend).__name__}: use '
                            "mmengine's CheckpointHook there")
        if is_main_process():  # what a kill mid-save left behind
            for folder in {self.out_dir, runner.work_dir}:
                for path in remove_stale_temporaries(folder):
                    runner.logger.info(f'removed {path}, left by an interrupted save')
        if hasattr(runner.optim_wrapper, 'stop_requested'):
            self._optim_wrapper = runner.optim_wrapper
        if self.save_on_sigterm and threading.current_thread() is threading.main_thread():
            # DataLoader workers forked later inherit this handler, so SIGTERM sent to the
            # whole job does not kill them before the main process has saved.
            previous = signal.signal(signal.SIGTERM, self._on_sigterm)
            early = getattr(previous, 'received', None)
            # tools/train.py's start-up handler ends its service here
            self._previous_handler = signal.SIG_DFL if early is not None else previous
            if early:
                runner.logger.warning('SIGTERM came during start-up: stopping after the first '
                                      'iteration, with a checkpoint')
                self._on_sigterm(signal.SIGTERM, None)
        self._continue_mid_epoch(runner)
        self._run_record = run_record(runner.train_loop.dataloader, get_world_size())

    def _on_sigterm(self, signum, frame) -> None:
        if self._sigterm:  # asked twice: end now, as the previous handler would
            self._restore_signal_handler()
            os.kill(os.getpid(), signal.SIGTERM)
        self._sigterm = True
        if self._optim_wrapper is not None:
            self._optim_wrapper.stop_requested = True

    def _restore_signal_handler(self) -> None:
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, self._previous_handler)
            self._previous_handler = None

    def after_train(self, runner) -> None:
        super().after_train(runner)
        self._restore_signal_handler()

    def _continue_mid_epoch(self, runner) -> None:
        loop = runner.train_loop
        if not isinstance(loop, EpochBasedTrainLoop):
            return  # mmengine's iteration loop replays its data iterator on resume
        sampler = loop.dataloader.sampler
        if isinstance(sampler, ResumableSampler):
            # the order and the augmentations follow the sampler's seed: the one of the run
            # that wrote the checkpoint, which may have drawn it at random
            saved = runner.message_hub.get_info('resumable_sampler_seed')
            if saved is not None:
                sampler.seed = saved
            runner.message_hub.update_info('resumable_sampler_seed', sampler.seed)
        per_epoch = _iters_per_epoch(loop)
        done = runner.iter - runner.epoch * per_epoch
        if done <= 0:
            return
        if done >= per_epoch:
            runner.logger.warning(
                f'the checkpoint is {runner.iter} iterations in, more than {runner.epoch} epochs '
                f'of {per_epoch} iterations hold: did the data set, batch size or number of '
                f'processes change? Epoch {runner.epoch + 1} starts from its beginning.')
        elif isinstance(sampler, ResumableSampler):
            sampler.skip(runner.epoch, done * loop.dataloader.batch_size)
            runner.logger.info(f'resuming inside epoch {runner.epoch + 1}: its first {done} of '
                               f'{per_epoch} iterations were done before the interruption')
        else:
            runner.logger.warning(
                f'resuming inside epoch {runner.epoch + 1} (after {done} of its {per_epoch} '
                f'iterations) with {type(sampler).__name__}, which restarts the epoch: those '
                f'{done} iterations are trained again. ResumableSampler would skip them.')

    # ----- writing -------------------------------------------------------------------------

    def _check_finite(self, runner, done: int) -> None:
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        bad = describe_non_finite(model.state_dict())
        if bad:
            raise FloatingPointError(
                f'not saving a checkpoint after iteration {done}: {bad} among the '
                'weights and buffers. The last good checkpoint is '
                f'{self.last_ckpt or "(none written by this run)"}; resume from it after fixing '
                'the cause (lower learning rate, --amp-dtype bfloat16, the data).')

    def _write(self, runner, filename: str, meta: dict, **save_args) -> str:
        """Save the runner's state as ``out_dir/filename`` through a temporary file and point
        ``last_checkpoint`` at it. Returns the path."""
        self._check_finite(runner, meta['iter'])
        loop = runner.train_loop
        if (isinstance(loop, EpochBasedTrainLoop)
                and meta['iter'] == (meta['epoch'] + 1) * _iters_per_epoch(loop)):
            meta = dict(meta, epoch=meta['epoch'] + 1)  # an epoch's end: resume at the next one
        meta = dict(meta, run=self._run_record)  # what resuming depends on (resume_check)
        path = self.file_backend.join_path(self.out_dir, filename)
        previous = self.last_ckpt
        # the checkpoint stores the message hub, which must already name it
        runner.message_hub.update_info('last_ckpt', path)
        partial = temporary_path(path)
        try:
            runner.save_checkpoint(self.out_dir, osp.basename(partial), self.file_client_args,
                                   meta=meta, backend_args=self.backend_args, **save_args)
        except BaseException as err:
            runner.message_hub.update_info('last_ckpt', previous)
            if isinstance(err, OSError) and err.errno in NO_SPACE:
                if osp.exists(partial):
                    os.remove(partial)
                raise disk_full_error(path, err, self._checkpoint_bytes(runner, previous),
                                      previous) from err
            raise
        if is_main_process():
            atomic_move(osp.join(self.out_dir, partial), path)
            atomic_write_text(osp.join(runner.work_dir, 'last_checkpoint'), path)
        self.last_ckpt = path
        self._saved_after = meta['iter']
        return path

    @staticmethod
    def _checkpoint_bytes(runner, previous) -> int:
        """About the size of a checkpoint: the last one's, or its tensors'."""
        if previous and osp.isfile(previous):
            return osp.getsize(previous)
        states = [runner.model.state_dict(), runner.optim_wrapper.state_dict()]
        tensors = []
        while states:
            item = states.pop()
            if isinstance(item, torch.Tensor):
                tensors.append(item)
            elif isinstance(item, dict):
                states.extend(item.values())
            elif isinstance(item, (list, tuple)):
                states.extend(item)
        return sum(t.numel() * t.element_size() for t in tensors)

    def _save_checkpoint_with_step(self, runner, step, meta) -> None:
        retired = []
        if self.max_keep_ckpts > 0 and not (self.keep_ckpt_ids and self.keep_ckpt_ids[-1] == step):
            while len(self.keep_ckpt_ids) >= self.max_keep_ckpts:
                retired.append(self.keep_ckpt_ids.popleft())
            self.keep_ckpt_ids.append(step)
            runner.message_hub.update_info('keep_ckpt_ids', list(self.keep_ckpt_ids))
        self._write(runner, self.filename_tmpl.format(step), meta,
                    save_optimizer=self.save_optimizer,
                    save_param_scheduler=self.save_param_scheduler, by_epoch=self.by_epoch,
                    **self.args)
        if not is_main_process():
            return
        # only now that the new checkpoint is complete
        old = [self.file_backend.join_path(self.out_dir, self.filename_tmpl.format(s))
               for s in retired]
        old += glob.glob(osp.join(self.out_dir, 'preempted_iter_*.pth'))
        old.append(osp.join(runner.work_dir, PREEMPTED_MARKER))
        for path in old:
            if osp.isfile(path) and path != self.last_ckpt:
                os.remove(path)

    # ----- preemption ----------------------------------------------------------------------

    def _sigterm_on_any_rank(self) -> bool:
        if self._optim_wrapper is not None:
            return self._optim_wrapper.stop_agreed  # agreed with the last update
        if get_world_size() == 1:
            return self._sigterm
        flag = torch.tensor([float(self._sigterm)])
        all_reduce(flag, op='max')  # every rank must stop at the same iteration
        return bool(flag.item())

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        super().after_train_iter(runner, batch_idx, data_batch, outputs)
        if not (self.save_on_sigterm and self._sigterm_on_any_rank()):
            return
        if getattr(runner.optim_wrapper, 'step_applied', True) is None:
            return  # inside a gradient accumulation cycle: stop after its update
        loop = runner.train_loop
        if runner.iter + 1 >= loop.max_iters:
            # a run resumed at its end would skip its final validation: finish instead
            runner.logger.warning('SIGTERM in the last iteration: finishing the run (its last '
                                  'checkpoint and validation) instead of stopping')
            self.save_on_sigterm = False
            return
        if (isinstance(loop, EpochBasedTrainLoop)
                and runner.iter + 1 == (runner.epoch + 1) * _iters_per_epoch(loop)):
            self._stop_at_epoch_end = True  # let the epoch's schedulers and hooks run first
            return
        self._save_and_stop(runner, dict(epoch=runner.epoch, iter=runner.iter + 1))

    def after_train_epoch(self, runner) -> None:
        super().after_train_epoch(runner)
        if self._stop_at_epoch_end:
            self._save_and_stop(runner, dict(epoch=runner.epoch + 1, iter=runner.iter))

    def _save_and_stop(self, runner, meta: dict) -> None:
        done = meta['iter']
        path = self.last_ckpt
        if self._saved_after != done:  # not just saved by the regular schedule
            path = self._write(runner, f'preempted_iter_{done}.pth', meta, save_optimizer=True,
                               save_param_scheduler=True, by_epoch=False)
        if is_main_process():  # for job scripts: this run stopped on SIGTERM, with this file
            atomic_write_text(osp.join(runner.work_dir, PREEMPTED_MARKER), path + '\n')
        barrier()  # rank 0 may still be writing: no rank leaves before the file is in place
        self._restore_signal_handler()
        raise TrainingPreempted(f'SIGTERM: saved {path} after iteration {done} and stopped; '
                                'continue with --resume')
