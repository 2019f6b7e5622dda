"""A circular queue of negative keys, kept as registered buffers."""
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_gather, get_world_size


class MemoryQueue(nn.Module):
    """FIFO memory of L2-normalised keys for contrastive losses (MoCo, DenseCL).

    The queue lives in the buffers ``queue`` ``(queue_len, feat_dim)`` and ``queue_ptr``
    (a 1-element long tensor: the row the next key is written to), so it is saved in
    checkpoints and restored on resume.  Keys are written in batch order starting at
    ``queue_ptr`` and wrap round the end; any batch size works, including one that does
    not divide ``queue_len`` or exceeds it (then only its last ``queue_len`` keys stay,
    exactly as if the keys had been written one by one).

    Args:
        queue_len (int): Number of keys held. Defaults to 65536.
        feat_dim (int): Dimension of each key. Defaults to 128.
    """

    def __init__(self, queue_len: int = 65536, feat_dim: int = 128) -> None:
        super().__init__()
        if queue_len < 1 or feat_dim < 1:
            raise ValueError(f'queue_len and feat_dim must be positive, got queue_len={queue_len}, '
                             f'feat_dim={feat_dim}')
        self.queue_len = queue_len
        self.feat_dim = feat_dim
        # Random unit vectors, as MoCo: the first iterations see uninformative negatives.
        self.register_buffer('queue', F.normalize(torch.randn(queue_len, feat_dim), dim=1))
        self.register_buffer('queue_ptr', torch.zeros(1, dtype=torch.long))

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` ``(n, feat_dim)`` of this rank, after gathering every rank's keys.

        All ranks write the same rows in rank order, so their queues stay identical.
        """
        if keys.dim() != 2 or keys.shape[1] != self.feat_dim:
            raise ValueError(f'keys must have shape (n, {self.feat_dim}), got {tuple(keys.shape)}')
        keys = keys.detach()
        if get_world_size() > 1:
            keys = torch.cat(all_gather(keys.contiguous()), dim=0)  # (world * n, D)
        n = keys.shape[0]
        ptr = int(self.queue_ptr)
        if n >= self.queue_len:
            # Only the last queue_len keys survive; they start where key n - queue_len went.
            ptr = (ptr + n - self.queue_len) % self.queue_len
            keys = keys[-self.queue_len:]
        rows = (ptr + torch.arange(keys.shape[0], device=keys.device)) % self.queue_len  # (n,)
        self.queue[rows] = keys.to(self.queue.dtype)
        self.queue_ptr[0] = (ptr + keys.shape[0]) % self.queue_len

    def extra_repr(self) -> str:
        return f'queue_len={self.queue_len}, feat_dim={self.feat_dim}'
