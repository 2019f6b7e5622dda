"""An optimizer wrapper that refuses steps with non-finite loss or gradients."""
import logging
from typing import Dict, Optional

import torch
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import print_log
from mmengine.optim import OptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS


@OPTIM_WRAPPERS.register_module()
class GuardedOptimWrapper(OptimWrapper):
    """mmengine's ``OptimWrapper`` that skips every update whose loss or gradients hold
    ``nan`` / ``inf``.

    One bad batch must not spoil a run of days: a skipped step changes no weight and no
    optimizer state, and it is logged with its iteration (mmengine's 1-based count, as in
    the log lines), loss and gradient norm.  :attr:`step_applied` tells the model whether
    its last update went through (``DenseViTSelfSup`` writes its queues only then).  After
    ``max_consecutive_skips`` skipped steps in a row, training stops with an error naming
    the iterations and the last checkpoint.  The decision is the same on every rank.
    The gradient norm (before clipping) is logged as ``grad_norm``.

    Args:
        optimizer (Optimizer): The optimizer.
        max_consecutive_skips (int): Skipped steps in a row that stop training.
            Defaults to 20.
        **kwargs: ``accumulative_counts`` and ``clip_grad`` of ``OptimWrapper``.
    """

    def __init__(self, optimizer, max_consecutive_skips: int = 20, **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        if max_consecutive_skips < 1:
            raise ValueError(f'max_consecutive_skips must be >= 1, got {max_consecutive_skips}')
        self.max_consecutive_skips = max_consecutive_skips
        self.consecutive_skips = 0
        self._first_skip = 0  # iteration of the first skip in the current row
        # True / False: the last update_params() stepped / skipped; None: accumulating
        self.step_applied: Optional[bool] = None

    def update_params(self, loss: torch.Tensor, step_kwargs: Optional[Dict] = None,
                      zero_kwargs: Optional[Dict] = None) -> None:
        loss = self.scale_loss(loss)
        self.backward(loss)  # on every rank, even with a bad loss: DDP reduces inside it
        if not self.should_update():
            self.step_applied = None
            return
        grad_norm = self._grad_norm()
        finite = torch.isfinite(grad_norm) & torch.isfinite(loss.detach().float())
        if get_world_size() > 1:
            finite = finite.float()
            all_reduce(finite, op='min')
        self.step_applied = bool(finite)
        if self.step_applied:
            self.message_hub.update_scalar('train/grad_norm', float(grad_norm))
            self.step(**(step_kwargs or {}))
            self.consecutive_skips = 0
        else:
            self._skip(float(loss.detach()), float(grad_norm))
        self.zero_grad(**(zero_kwargs or {}))

    def _grad_norm(self) -> torch.Tensor:
        """Total 2-norm of the gradients the optimizer would apply (non-finite if any is)."""
        grads = [p.grad for group in self.optimizer.param_groups for p in group['params']
                 if p.grad is not None]
        if not grads:
            return torch.zeros(())
        return torch.nn.utils.get_total_norm(grads, norm_type=2.0)

    def _skip(self, loss: float, grad_norm: float, detail: str = '') -> None:
        self.consecutive_skips += 1
        iteration = self._inner_count
        if self.consecutive_skips == 1:
            self._first_skip = iteration
        last_ckpt = self.message_hub.get_info('last_ckpt') or '(none written by this run)'
        print_log(f'iteration {iteration}: non-finite loss or gradients (loss {loss:.4g}, '
                  f'gradient norm {grad_norm:.4g}){detail}; step skipped, weights '
                  f'and optimizer state unchanged ({self.consecutive_skips} in a row, training '
                  f'stops at {self.max_consecutive_skips})', logger='current',
                  level=logging.WARNING)
        if self.consecutive_skips >= self.max_consecutive_skips:
            raise FloatingPointError(
                f'iterations {self._first_skip}-{iteration}: {self.consecutive_skips} training '
                'steps in a '
                'row had non-finite loss or gradients, so the run has diverged and is stopped. '
                f'The last good checkpoint is {last_ckpt}; resume from it (--resume PATH) after '
                'fixing the cause: a lower learning rate, --amp-dtype bfloat16 instead of '
                'float16, or the data.')
