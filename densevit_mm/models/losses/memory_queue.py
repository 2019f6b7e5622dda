"""A circular queue of negative keys, kept as registered buffers."""
import logging
from typing import List, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_gather, get_world_size
from mmengine.logging import print_log


class MemoryQueue(nn.Module):
    """FIFO memory of L2-normalised keys for contrastive losses (MoCo, DenseCL).

    The queue lives in the buffers ``queue`` ``(queue_len, feat_dim)`` and ``queue_ptr``
    (a 1-element long tensor: the row the next key is written to), so it is saved in
    checkpoints and restored on resume.  Keys are written in batch order starting at
    ``queue_ptr`` and wrap round the end; any batch size works, including one that does
    not divide ``queue_len`` or exceeds it (then only its last ``queue_len`` keys stay,
    exactly as if the keys had been written one by one).

    A key row with any non-finite entry is never written: one such row would otherwise
    make every later loss ``nan`` until it is overwritten.  Dropped rows are logged (a
    warning naming the loss) and :meth:`commit` returns their number.

    Writes can be held back: after :meth:`stage`, :meth:`enqueue` only collects keys, and
    :meth:`commit` writes them (or :meth:`discard` forgets them).  ``GuardedOptimWrapper``
    stages the queues of the model it trains and commits them only once it has applied the
    step, whatever wraps the model (one process or ``MMDistributedDataParallel``).

    A write reads nothing back to the host when the caller vouches that every row is finite
    (``commit(all_finite=True)``): the pointer stays on the device, so a training step
    waits for no GPU kernel here.

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
        self._staged: Optional[List[torch.Tensor]] = None  # None: enqueue() writes at once

    @torch.no_grad()
    def enqueue(self, keys: torch.Tensor) -> None:
        """Write ``keys`` ``(n, feat_dim)`` of this rank, after gathering every rank's keys;
        while staging (:meth:`stage`), keep them for :meth:`commit` instead.

        All ranks write the same rows in rank order, so their queues stay identical.
        """
        if keys.dim() != 2 or keys.shape[1] != self.feat_dim:
            raise ValueError(f'keys must have shape (n, {self.feat_dim}), got {tuple(keys.shape)}')
        if self._staged is not None:
            self._staged.append(keys.detach().clone())
        else:
            self._write(keys.detach())

    @property
    def staging(self) -> bool:
        """Whether :meth:`enqueue` is holding keys back for :meth:`commit`."""
        return self._staged is not None

    def stage(self) -> None:
        """Hold back the writes of :meth:`enqueue` until :meth:`commit` or :meth:`discard`
        (keys staged earlier and not yet committed stay staged)."""
        if self._staged is None:
            self._staged = []

    @torch.no_grad()
    def staged_non_finite_rows(self) -> torch.Tensor:
        """Number of staged key rows (this rank's) with a non-finite entry, as a 0-d tensor on
        the queue's device (nothing is read to the host)."""
        count = torch.zeros((), dtype=torch.long, device=self.queue.device)
        for keys in self._staged or ():
            count += (~torch.isfinite(keys).all(dim=1)).sum()  # (n,) -> ()
        return count

    @torch.no_grad()
    def commit(self, all_finite: bool = False) -> int:
        """Write the staged keys in the order they came and stop staging.

        Every rank must call it at the same point (it gathers).  ``all_finite=True``: the
        caller knows that no rank staged a non-finite row (see :meth:`staged_non_finite_rows`),
        so the rows are written without being checked on the host.  Returns the number of
        non-finite rows refused in this write.
        """
        staged, self._staged = self._staged, None
        if not staged:
            return 0
        return self._write(torch.cat(staged), all_finite)

    def discard(self) -> int:
        """Forget the staged keys and stop staging. Returns how many rows were forgotten."""
        staged, self._staged = self._staged, None
        return sum(len(keys) for keys in staged or ())

    def _write(self, keys: torch.Tensor, all_finite: bool = False) -> int:
        if get_world_size() > 1:
            keys = torch.cat(all_gather(keys.contiguous()), dim=0)  # (world * n, D)
        dropped = 0
        if not all_finite:
            # After the gather every rank sees the same rows, so all drop the same ones.
            finite = torch.isfinite(keys).all(dim=1)  # (world * n,)
            dropped = int(keys.shape[0] - finite.sum())
            if dropped:
                keys = keys[finite]
                print_log(f'{type(self).__name__}: {dropped} of {len(finite)} key rows had '
                          'non-finite entries and were not written to the queue',
                          logger='current', level=logging.WARNING)
        n = keys.shape[0]
        if n == 0:
            return dropped
        # Only the last queue_len keys survive; they go where they would have gone one by one.
        kept = min(n, self.queue_len)
        offsets = torch.arange(n - kept, n, device=keys.device)  # (kept,)
        rows = (self.queue_ptr + offsets) % self.queue_len  # on the device: no host read
        self.queue.index_copy_(0, rows, keys[n - kept:].to(self.queue.dtype))
        self.queue_ptr.add_(n).remainder_(self.queue_len)
        return dropped

    def extra_repr(self) -> str:
        return f'queue_len={self.queue_len}, feat_dim={self.feat_dim}'
