"""The base of both contrastive losses: a memory queue and the InfoNCE against it."""
import torch

from .info_nce_function import info_nce
from .lse_routes import check_route
from .memory_queue import MemoryQueue


class QueuedInfoNCE(MemoryQueue):
    """Base of the contrastive losses: a :class:`MemoryQueue` plus a temperature.

    Args:
        queue_len (int): Number of negative keys kept. Defaults to 65536.
        feat_dim (int): Dimension of the projected vectors. Defaults to 128.
        temperature (float): Softmax temperature. Defaults to 0.2.
        implementation (str): How the InfoNCE against the queue is computed, all to the same
            value and gradient: ``'fused'`` (a fused attention kernel), ``'chunked'``,
            ``'naive'`` (it materialises all logits) or ``'auto'``: fused where a kernel serves
            the device and dtype, chunked elsewhere (see :mod:`.lse_routes`).
            tools/benchmark_pretrain.py measures them side by side. Defaults to ``'auto'``.
        chunk_size (int): Queue rows per chunk of the chunked route. Defaults to 2048
            (measurements: docs/performance.md).
    """

    def __init__(self, queue_len: int = 65536, feat_dim: int = 128, temperature: float = 0.2,
                 implementation: str = 'auto', chunk_size: int = 2048) -> None:
        super().__init__(queue_len=queue_len, feat_dim=feat_dim)
        if temperature <= 0:
            raise ValueError(f'temperature must be positive, got {temperature}')
        check_route(implementation, chunk_size)
        self.temperature = temperature
        self.implementation = implementation
        self.chunk_size = chunk_size

    def contrast_and_enqueue(self, q: torch.Tensor, k: torch.Tensor,
                             new_keys: torch.Tensor) -> torch.Tensor:
        """InfoNCE of unit ``q`` ``(M, D)`` vs unit ``k`` ``(M, D)`` and the current queue; then
        write unit ``new_keys`` ``(n, D)``.  The negatives are the queue before the write: every
        route finishes its gradient in forward and keeps no reference to the queue."""
        loss = info_nce(q, k, self.queue, self.temperature, self.implementation, self.chunk_size)
        self.enqueue(new_keys)
        return loss
