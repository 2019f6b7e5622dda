"""Mixed precision for GuardedOptimWrapper: bfloat16 by default, float16 when asked."""
import logging
import math
from contextlib import contextmanager
from typing import Union

import torch
import torch.nn as nn
from mmengine.logging import print_log
from mmengine.optim import AmpOptimWrapper
from mmpretrain.registry import OPTIM_WRAPPERS

from .guarded_optim_wrapper import GuardedOptimWrapper


def bf16_supported(device_type: str) -> bool:
    """Whether autocast to bfloat16 runs natively on this kind of device (a GPU that only
    emulates it, e.g. V100 or T4, does not count)."""
    return device_type != 'cuda' or torch.cuda.is_bf16_supported(including_emulation=False)


@OPTIM_WRAPPERS.register_module()
class GuardedAmpOptimWrapper(GuardedOptimWrapper, AmpOptimWrapper):
    """mmengine's ``AmpOptimWrapper`` with the non-finite guard of :class:`GuardedOptimWrapper`.

    mmengine's autocasts to float16 unless told otherwise, and under float16 the dense
    queues, written in the forward pass, took the keys of steps that the gradient scaler then
    threw away.  Here:

    - ``dtype='bfloat16'`` (default) has float32's exponent range: no loss scaling (the
      ``loss_scaler`` is a disabled ``GradScaler``), no overflow steps.  Refused on a GPU
      without native bfloat16 (emulated on V100 / T4: slow), with the way out in the message.
    - ``dtype='float16'`` scales the loss (``torch.amp.GradScaler``).  An overflowing step is
      skipped like any non-finite step (so the model writes no queue rows for it) and the
      scale halves once; it grows back after ``growth_interval`` good steps.  Such an overflow
      with a finite loss and a scale above 1 is the scaler's routine search: it is logged at
      INFO and does not count towards ``max_consecutive_skips``.

    ``backward``, ``state_dict`` and ``load_state_dict`` are ``AmpOptimWrapper``'s.  Its
    ``__init__`` asserts a GPU and ``optim_context`` (mmengine's ``autocast``) refuses float16
    on CPU and picks the device by what is installed, so both are replaced: this wrapper
    autocasts on the parameters' device, CPU included.  Its ``step`` is replaced too:
    ``GradScaler.step`` reads the inf flags to the host, which the guard has already read.

    Args:
        optimizer (Optimizer): The optimizer.
        dtype (str): 'bfloat16' or 'float16'. Defaults to 'bfloat16'.
        loss_scale (str | float | dict): float16 only: 'dynamic', a fixed scale, or
            ``GradScaler`` arguments. Defaults to 'dynamic'.
        **kwargs: Arguments of :class:`GuardedOptimWrapper`.
    """

    def __init__(self, optimizer, dtype: str = 'bfloat16',
                 loss_scale: Union[str, float, dict] = 'dynamic', **kwargs) -> None:
        super().__init__(optimizer, **kwargs)
        if dtype not in ('bfloat16', 'float16'):
            raise ValueError(f"dtype must be 'bfloat16' or 'float16', got {dtype!r}")
        params = [p for group in optimizer.param_groups for p in group['params']]
        self.device_type = params[0].device.type if params else 'cpu'
        if dtype == 'bfloat16' and not bf16_supported(self.device_type):
            raise ValueError(f'{torch.cuda.get_device_name()} has no native bfloat16 (PyTorch '
                             'would emulate it, slowly): train with --amp-dtype float16 (loss '
                             'scaling) or without --amp')
        self.cast_dtype = getattr(torch, dtype)
        self._scale_update_param = None  # AmpOptimWrapper's name for a fixed scale
        if dtype == 'bfloat16':
            self.loss_scaler = torch.amp.GradScaler(self.device_type, enabled=False)
        elif loss_scale == 'dynamic':
            self.loss_scaler = torch.amp.GradScaler(self.device_type)
        elif isinstance(loss_scale, (int, float)):
            self._scale_update_param = float(loss_scale)
            self.loss_scaler = torch.amp.GradScaler(self.device_type, init_scale=loss_scale)
        elif isinstance(loss_scale, dict):
            self.loss_scaler = torch.amp.GradScaler(self.device_type, **loss_scale)
        else:
            raise TypeError("loss_scale must be 'dynamic', a number or a dict, got "
                            f'{loss_scale!r}')

    @contextmanager
    def optim_context(self, model: nn.Module):
        with super().optim_context(model), torch.autocast(self.device_type, self.cast_dtype):
            yield

    def _grad_norm(self) -> torch.Tensor:
        self.loss_scaler.unscale_(self.optimizer)  # true gradients, for the check and clipping
        return super()._grad_norm()

    def step(self, **kwargs) -> None:
        if self.clip_grad_kwargs:
            self._clip_grad()
        # Only applied steps get here, their gradients unscaled and finite on every rank:
        # GradScaler.step would read its inf flags to the host to learn the same.
        self.optimizer.step(**kwargs)
        self.loss_scaler.update(self._scale_update_param)

    def _skip(self, loss: float, grad_norm: float, detail: str = '') -> None:
        if not self.loss_scaler.is_enabled():
            super()._skip(loss, grad_norm, detail)
            return
        before = self.loss_scaler.get_scale()
        self.loss_scaler.update(self._scale_update_param)  # halves the scale after an overflow
        detail = f'; float16 loss scale {before:g} -> {self.loss_scaler.get_scale():g}'
        if math.isfinite(loss) and before > 1:
            print_log(f'iteration {self._inner_count}: float16 gradients overflowed{detail}; '
                      'step skipped', logger='current', level=logging.INFO)
            return
        super()._skip(loss, grad_norm, detail)
