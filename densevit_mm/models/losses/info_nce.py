"""InfoNCE against a fixed set of negatives: the one formula both contrastive terms use."""
import torch
import torch.nn.functional as F

from .memory_queue import MemoryQueue


def info_nce(q: torch.Tensor, k: torch.Tensor, negatives: torch.Tensor,
             temperature: float) -> torch.Tensor:
    """Mean over rows of ``-log(exp(q.k/t) / (exp(q.k/t) + sum_j exp(q.n_j/t)))``.

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
    """

    def __init__(self, queue_len: int = 65536, feat_dim: int = 128,
                 temperature: float = 0.2) -> None:
        super().__init__(queue_len=queue_len, feat_dim=feat_dim)
        if temperature <= 0:
            raise ValueError(f'temperature must be positive, got {temperature}')
        self.temperature = temperature

    def contrast_and_enqueue(self, q: torch.Tensor, k: torch.Tensor,
                             new_keys: torch.Tensor) -> torch.Tensor:
        """InfoNCE of unit ``q`` ``(M, D)`` vs unit ``k`` ``(M, D)`` and the current queue; then
        write unit ``new_keys`` ``(n, D)``.  The negatives are the queue before the write."""
        # clone: enqueue() writes the buffer in place, and backward still needs these rows.
        loss = info_nce(q, k, self.queue.clone(), self.temperature)
        self.enqueue(new_keys)
        return loss
