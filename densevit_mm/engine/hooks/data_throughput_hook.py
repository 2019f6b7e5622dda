"""Says in the log when training waits for its data, and what would keep the loader up."""
import statistics

from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS


@HOOKS.register_module()
class DataThroughputHook(Hook):
    """Warns when the data loader cannot keep up with the training step.

    Every ``window`` iterations (after the first ``warmup``) it compares the median time an
    iteration waited for its batch (``data_time``, from mmengine's ``IterTimerHook``) with
    the median iteration time.  Beyond ``max_wait`` of it, the log says so with the numbers,
    and the workers per process that would deliver a batch in the time the step takes
    without waiting: ``workers x time / (time - data_time)`` (the loader's rate scales with
    its workers while cores are free), plus one core for the training process.  Repeated at
    most every ``repeat`` iterations while it lasts.

    Args:
        window (int): Iterations per check. Defaults to 50.
        warmup (int): Iterations left out at the start (workers starting, first batches).
            Defaults to 20.
        max_wait (float): Share of the iteration time spent waiting for data that is
            reported. Defaults to 0.1.
        repeat (int): Iterations between two reports. Defaults to 1000.
    """

    priority = 'LOW'  # after IterTimerHook has recorded the iteration

    def __init__(self, window: int = 50, warmup: int = 20, max_wait: float = 0.1,
                 repeat: int = 1000) -> None:
        if window < 1 or warmup < 0 or not 0 < max_wait < 1 or repeat < 1:
            raise ValueError(f'DataThroughputHook needs window >= 1, warmup >= 0, 0 < max_wait '
                             f'< 1 and repeat >= 1; got {window}, {warmup}, {max_wait}, {repeat}')
        self.window, self.warmup, self.max_wait, self.repeat = window, warmup, max_wait, repeat
        self._reported = None  # iteration of the last report

    def after_train_iter(self, runner, batch_idx: int, data_batch=None, outputs=None) -> None:
        done = runner.iter + 1
        if done <= self.warmup or (done - self.warmup) % self.window:
            return
        hub = runner.message_hub
        if 'train/data_time' not in hub.log_scalars or 'train/time' not in hub.log_scalars:
            return
        data = statistics.median(hub.get_scalar('train/data_time').data[0][-self.window:])
        step = statistics.median(hub.get_scalar('train/time').data[0][-self.window:])
        if step <= 0 or data <= self.max_wait * step:
            return
        if self._reported is not None and done - self._reported < self.repeat:
            return
        self._reported = done
        workers = runner.train_dataloader.num_workers
        compute = max(step - data, 1e-9)
        needed = -(-workers * step // compute) if workers else None
        advice = (f'about {int(needed)} workers per process would keep up ({int(needed) + 1} '
                  f'cores with the training process; it has {workers})' if needed else
                  'it loads in the training process (num_workers=0): give it workers')
        runner.logger.warning(
            f'the data loader is behind: over iterations {done - self.window + 1}-{done} each '
            f'waited {data * 1e3:.0f} ms for its batch of a {step * 1e3:.0f} ms iteration '
            f'(median, {data / step:.0%}); {advice}. tools/benchmark_data.py measures the '
            'CPU time per image of each data path; a GPU near its limit needs the device '
            'augmentation of configs/pretrain/densevit_s.py and shards on network storage.')
