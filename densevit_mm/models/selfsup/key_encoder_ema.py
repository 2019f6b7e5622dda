"""The momentum key encoder's update, without reading the device every step."""
import torch
import torch.nn as nn
from mmengine.model import ExponentialMovingAverage


class KeyEncoderEMA(ExponentialMovingAverage):
    """mmengine's ``ExponentialMovingAverage`` (same arguments, same state dict) whose
    update reads nothing back from the device.

    mmengine's ``update_parameters`` tests its ``steps`` buffer (``steps == 0``,
    ``steps % interval``) on every update: two host reads per training step, each of
    which waits for every GPU kernel queued so far.  Here the host keeps a copy of the count,
    read from the buffer once after construction or a checkpoint load; the buffer still
    counts on the device and travels in checkpoints.  The average itself is the same
    ``lerp`` with ``momentum``, applied to all parameters in one ``foreach`` call.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._host_steps = None  # the `steps` buffer as the host knows it; None: read it

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._host_steps = None  # a checkpoint brought its own count

    @torch.no_grad()
    def update_parameters(self, model: nn.Module) -> None:
        if self._host_steps is None:
            self._host_steps = int(self.steps)
        source = model.state_dict() if self.update_buffers else dict(model.named_parameters())
        averaged = [(p, source[k].data) for k, p in self.avg_parameters.items()]
        if self._host_steps == 0:  # the key encoder starts as a copy of the online one
            torch._foreach_copy_([p.data for p, _ in averaged], [s for _, s in averaged])
        elif self._host_steps % self.interval == 0:
            floats = [(p.data, s) for p, s in averaged if p.dtype.is_floating_point]
            torch._foreach_lerp_([p for p, _ in floats], [s for _, s in floats], self.momentum)
        if not self.update_buffers:  # buffers follow the online model, as in mmengine
            for b_avg, b_src in zip(self.module.buffers(), model.buffers()):
                b_avg.data.copy_(b_src.data)
        self.steps += 1
        self._host_steps += 1
