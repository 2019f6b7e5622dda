"""DenseCL's warm-up of the dense loss weight."""
from typing import Optional, Sequence

from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class LambdaWarmupHook(Hook):
    """Hold the dense weight ``loss_lambda`` at 0 for the first ``start_iters`` iterations.

    Early in training the backbone features are random, so the correspondence they give is
    noise; DenseCL trains the global term alone for its first 1000 iterations.  The value
    in force is logged as ``loss_lambda`` each iteration.

    Args:
        start_iters (int): Iterations with ``loss_lambda = 0``. Defaults to 1000.
    """

    priority = 'NORMAL'

    def __init__(self, start_iters: int = 1000) -> None:
        if start_iters < 0:
            raise ValueError(f'start_iters must be >= 0, got {start_iters}')
        self.start_iters = start_iters
        self.target_lambda = None

    @staticmethod
    def _algorithm(runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        if not hasattr(model, 'loss_lambda'):
            raise TypeError(f'LambdaWarmupHook needs a model with a loss_lambda attribute '
                            f'(e.g. DenseViTSelfSup), got {type(model).__name__}')
        return model

    def before_train(self, runner) -> None:
        self.target_lambda = self._algorithm(runner).loss_lambda

    def before_train_iter(self, runner, batch_idx: int,
                          data_batch: Optional[Sequence[dict]] = None) -> None:
        value = self.target_lambda if runner.iter >= self.start_iters else 0.
        self._algorithm(runner).loss_lambda = value
        runner.message_hub.update_scalar('train/loss_lambda', value)
