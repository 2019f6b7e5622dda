"""Training log values that reach the host once per logging interval, not once per step."""
from typing import Dict, List, Optional

import torch
from mmengine.hooks import LoggerHook, RuntimeInfoHook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class DeferredRuntimeInfoHook(RuntimeInfoHook):
    """mmengine's ``RuntimeInfoHook`` (``default_hooks.runtime_info``) that keeps the step's
    logged tensors on the device until they are read, and logs nothing of a skipped step.

    mmengine's hook calls ``.item()`` on every value the model returns (the loss, its terms,
    ``hub_share``, ``corr_acc``) after every iteration: on a GPU each call waits for all
    kernels queued so far, so the host cannot queue the next step while this one runs.
    Here the values wait on the device and reach the message hub in one read when the
    ``LoggerHook`` prints (its interval, an epoch's end, the last iteration), before a
    checkpoint is saved and when training ends; the message hub then holds the same values
    in the same order as with mmengine's hook.

    A step that the optimizer wrapper skipped (``step_applied`` False, see
    ``GuardedOptimWrapper``) logs no value, so its ``nan`` never enters the smoothed log.
    """

    def __init__(self) -> None:
        super().__init__()
        self._pending: List[Dict[str, object]] = []
        self._interval = 1

    def before_train(self, runner) -> None:
        super().before_train(runner)
        loggers = [hook for hook in runner.hooks if isinstance(hook, LoggerHook)]
        self._interval = loggers[0].interval if loggers else 1

    def after_train_iter(self, runner, batch_idx: int, data_batch=None,
                         outputs: Optional[dict] = None) -> None:
        if outputs and getattr(runner.optim_wrapper, 'step_applied', True) is not False:
            self._pending.append({key: value.detach() if torch.is_tensor(value) else value
                                  for key, value in outputs.items()})
        if (self.every_n_inner_iters(batch_idx, self._interval)
                or self.end_of_epoch(runner.train_dataloader, batch_idx)
                or self.is_last_train_iter(runner)):
            self._flush(runner)

    def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
        if self._pending:  # the checkpoint's copy of the message hub was taken already
            self._flush(runner)
            checkpoint['message_hub']['log_scalars'] = \
                runner.message_hub.state_dict()['log_scalars']

    def after_train(self, runner) -> None:
        self._flush(runner)

    def _flush(self, runner) -> None:
        """Move the pending values to the message hub, in the order they came: one read."""
        tensors = [value.float().reshape(()) for outputs in self._pending
                   for value in outputs.values() if torch.is_tensor(value)]
        values = iter(torch.stack(tensors).tolist() if tensors else ())
        for outputs in self._pending:
            for key, value in outputs.items():
                value = next(values) if torch.is_tensor(value) else value
                runner.message_hub.update_scalar(f'train/{key}', value)
        self._pending = []
