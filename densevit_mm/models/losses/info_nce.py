"""InfoNCE against a fixed set of negatives: the one formula both contrastive terms use."""
import torch
import torch.nn.functional as F

from .lean_info_nce import chunked_info_nce, fused_info_nce, fused_kernel_for
from .memory_queue import MemoryQueue


def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Mean over rows of ``-log(exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.n_j/t)))``.

    The naive path: it materialises the ``(M, 1 + K)`` logits.  It is the reference for
    :func:`fused_info_nce` and :func:`chunked_info_nce`, which the losses use.

    Args:
        q (Tensor): Queries ``(M, D)``, L2-normalised.
        k (Tensor): The positive key of each query ``(M, D)``, L2-normalised.
        negatives (Tensor): Negative keys ``(K, D)``, L2-normalised; no gradient flows
            into them.
        temperature (float): Softmax temperature ``t``.

    Returns:
        Tensor: Scalar loss.
    """
    l_pos = (q * k).sum(dim=1, keepdim=True)  # (M, 1)
    l_neg = q @ negatives.detach().t()  # (M, K)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature  # (M, 1 + K)
    # The positive sits in column 0 of every row.
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


class QueuedInfoNCE(MemoryQueue):
    """Base of the contrastive losses: a :class:`MemoryQueue` plus a temperature.

    Args:
        queue_len (int): Number of negative keys kept. Defaults to 65536.
        feat_dim (int): Dimension of the projected vectors. Defaults to 128.
        temperature (float): Softmax temperature. Defaults to 0.2.
        implementation (str): How the InfoNCE against the queue is computed, all to the same
            value and gradient: ``'fused'`` (:func:`fused_info_nce`, a fused attention kernel),
            ``'chunked'`` (:func:`chunked_info_nce`), ``'naive'`` (:func:`info_nce`, the
            reference; it materialises all logits) or ``'auto'``: fused where a kernel serves
            the device and dtype, chunked elsewhere.  tools/benchmark_pretrain.py measures
            them side by side. Defaults to ``'auto'``.
        chunk_size (int): Queue rows per chunk of the chunked path. Defaults to 2048 (on CPU
            512-2048 are equally fast; the largest is kindest to GPUs).
    """

    IMPLEMENTATIONS = ('auto', 'fused', 'chunked', 'naive')

    def __init__(self, queue_len: int = 65536, feat_dim: int = 128, temperature: float = 0.2,
                 implementation: str = 'auto', chunk_size: int = 2048) -> None:
        super().__init__(queue_len=queue_len, feat_dim=feat_dim)
        if temperature <= 0:
            raise ValueError(f'temperature must be positive, got {temperature}')
        if implementation not in self.IMPLEMENTATIONS:
            raise ValueError(f'implementation must be one of {self.IMPLEMENTATIONS}, '
                             f'got {implementation!r}')
        if chunk_size < 1:
            raise ValueError(f'chunk_size must be positive, got {chunk_size}')
        self.temperature = temperature
        self.implementation = implementation
        self.chunk_size = chunk_size

    def contrast_and_enqueue(self, q: torch.Tensor, k: torch.Tensor,
                             new_keys: torch.Tensor) -> torch.Tensor:
        """InfoNCE of unit ``q`` ``(M, D)`` vs unit ``k`` ``(M, D)`` and the current queue; then
        write unit ``new_keys`` ``(n, D)``.  The negatives are the queue before the write."""
        path = self.implementation
        if path == 'auto':
            path = 'fused' if fused_kernel_for(q) is not None else 'chunked'
        if path == 'naive':
            # clone: enqueue() writes the buffer in place and this backward needs the rows
            loss = info_nce(q, k, self.queue.clone(), self.temperature)
        elif path == 'fused':
            # like chunked: finishes its gradient in forward, keeps no reference to the queue
            loss = fused_info_nce(q, k, self.queue, self.temperature)
        else:
            loss = chunked_info_nce(q, k, self.queue, self.temperature, self.chunk_size)
        self.enqueue(new_keys)
        return loss
