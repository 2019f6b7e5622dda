"""An optimizer wrapper that refuses steps with non-finite loss or gradients."""
import logging
from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple

import torch
import torch.nn as nn
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS

from densevit_mm.models.losses.memory_queue import MemoryQueue


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` that skips every update whose loss or gradients hold
    ``nan`` / ``inf``, and writes the model's queues only with the updates it applies.

    One bad batch must not spoil a run of days: a skipped step changes no weight, no
    optimizer state and no queue row, and it is logged with its iteration (mmengine's 1-based
    count, as in the log lines), loss and gradient norm.  After ``max_consecutive_skips``
    skipped steps in a row, training stops with an error naming the iterations and the last
    checkpoint.

    The queue writes are held here because every training path passes here: the model's own
    ``train_step`` in one process, and ``MMDistributedDataParallel.train_step``, which never
    calls the model's, with two or more.  :meth:`optim_context` stages the
    :class:`MemoryQueue` modules of the model (their keys are written in the forward pass,
    before anyone knows whether the step is good); :meth:`update_params` commits them after
    an applied update and discards them with a skipped one.

    The decision costs one host read per update and, with several processes, one collective:
    the finite check, the stop request (:attr:`stop_requested`, set by the SIGTERM handler
    of ``CrashSafeCheckpointHook``), whether a staged key row is non-finite, and the gradient
    norm travel in one tensor.  :attr:`step_applied` (True / False; None while accumulating
    gradients) and :attr:`stop_agreed` hold the outcome, the same on every rank.  The
    gradient norm (before clipping) is logged as ``grad_norm``; ``dropped_keys`` counts
    non-finite key rows kept out of the queues of an applied step.

    Args:
        optimizer (Optimizer): The optimizer.
        max_consecutive_skips (int): Skipped steps in a row that stop training.
            Defaults to 20.
        **kwargs: ``accumulative_counts`` and ``clip_grad`` of ``OptimWrapper``.
    """

    def __init__(self, optimizer, max_consecutive_skips: int = 20, **kwargs) -> None:
        # OptimWrapper's, not super(): in GuardedAmpOptimWrapper that is AmpOptimWrapper's,
        # which asserts a GPU (see there)
        OptimWrapper.__init__(self, optimizer, **kwargs)
        if max_consecutive_skips < 1:
            raise ValueError(f'max_consecutive_skips must be >= 1, got {max_consecutive_skips}')
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self._first_skip = 0  # iteration of the first skip in the current row
        # True / False: the last update_params() stepped / skipped; None: accumulating
        self.step_applied: Optional[bool] = None
        self.stop_requested = False  # this rank was asked to stop (e.g. SIGTERM)
        self.stop_agreed = False  # some rank was, as of the last update: every rank stops
        self._queues: List[MemoryQueue] = []
        self._grad_norm_value: Optional[torch.Tensor] = None  # for clipping, on the device

    @contextmanager
    def optim_context(self, model: nn.Module):
        # the keys this forward pass writes wait for the decision in update_params
        self._queues = [m for m in model.modules() if isinstance(m, MemoryQueue)]
        for queue in self._queues:
            queue.stage()
        with OptimWrapper.optim_context(self, model):  # not AmpOptimWrapper's autocast
            yield

    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        loss = self.scale_loss(loss)
        self.backward(loss)  # on every rank, even with a bad loss: DDP reduces inside it
        if not self.should_update():
            self.step_applied = None
            return
        grad_norm = self._grad_norm()
        finite, self.stop_agreed, keys_finite, norm = self._agree(loss, grad_norm)
        self.step_applied = finite
        if finite:
            self.message_hub.update_scalar('train/grad_norm', norm)
            self._grad_norm_value = grad_norm
            self.step(**(step_kwargs or {}))
            self.consecutive_skips = 0
            dropped = sum(queue.commit(all_finite=keys_finite) for queue in self._queues)
            if dropped:
                self.message_hub.update_scalar('train/dropped_keys', float(dropped))
        else:
            for queue in self._queues:
                queue.discard()
            self._skip(float(loss.detach()), float(grad_norm))
        self.zero_grad(**(zero_kwargs or {}))

    def _agree(self, loss: torch.Tensor, grad_norm: torch.Tensor
               ) -> Tuple[bool, bool, bool, float]:
        """This update's decision, the same on every rank: (loss and gradients finite
        everywhere, some rank asked to stop, every staged key row finite, gradient norm).
        One collective and one read to the host."""
        bad = ~(torch.isfinite(grad_norm) & torch.isfinite(loss.detach().float()))
        bad_keys = sum((q.staged_non_finite_rows() for q in self._queues),
                       torch.zeros((), dtype=torch.long, device=grad_norm.device))
        flags = torch.stack([bad.float(), torch.full_like(grad_norm, float(self.stop_requested),
                                                        dtype=torch.float32),
                             bad_keys.float(), grad_norm.float()])  # (4,)
        if get_world_size() > 1:
            # flags are 0 / 1 and counts; the norm is the same on every rank after DDP's
            # gradient all-reduce (and unused when some rank's is not finite)
            all_reduce(flags, op='max')
        bad, stop, bad_keys, norm = flags.tolist()
        return not bad, bool(stop), bad_keys == 0, norm

    def _grad_norm(self) -> torch.Tensor:
        """Total norm of the gradients the optimizer would apply (non-finite if any is), of
        the clipping's ``norm_type`` (default 2); a 0-d tensor on their device."""
        params = self._params_with_grad()
        if not params:
            return torch.zeros(())
        norm_type = (self.clip_grad_kwargs or {}).get('norm_type', 2.0)
        return torch.nn.utils.get_total_norm([p.grad for p in params], norm_type=norm_type)

    def _params_with_grad(self) -> List[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group['params']
                if p.grad is not None]

    def _clip_grad(self) -> None:
        # mmengine's computes the norm again and reads it to the host; this step has it
        if self.clip_func is torch.nn.utils.clip_grad_value_:
            torch.nn.utils.clip_grad_value_(self._params_with_grad(), **self.clip_grad_kwargs)
        else:
            torch.nn.utils.clip_grads_with_norm_(
                self._params_with_grad(), self.clip_grad_kwargs['max_norm'],
                self._grad_norm_value)

    def _skip(self, loss: float, grad_norm: float, detail: str = '') -> None:
        self.consecutive_skips += 1
        iteration = self._inner_count
        if self.consecutive_skips == 1:
            self._first_skip = iteration
        last_ckpt = self.message_hub.get_info('last_ckpt') or '(none written by this run)'
        world = get_world_size()
        where = f' on at least one of {world} processes (here: ' if world > 1 else ' ('
        print_log(f'iteration {iteration}: non-finite loss or gradients{where}loss {loss:.4g}, '
                  f'gradient norm {grad_norm:.4g}){detail}; step skipped, weights, '
                  f'optimizer state and queues unchanged ({self.consecutive_skips} in a row, '
                  f'training stops at {self.max_consecutive_skips})', logger='current',
                  level=logging.WARNING)
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise FloatingPointError(
                f'iterations {self._first_skip}-{iteration}: {self.consecutive_skips} training '
                'steps in a '
                'row had non-finite loss or gradients, so the run has diverged and is stopped. '
                f'The last good checkpoint is {last_ckpt}; resume from it (--resume PATH) after '
                'fixing the cause: a lower learning rate, --amp-dtype bfloat16 instead of '
                'float16, or the data.')
