"""Batches that a resumed iteration-based run can skip by index."""
from typing import Iterator, List, Optional, Tuple

import numpy as np
from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_dist_info
from mmpretrain.registry import DATA_SAMPLERS
from torch.utils.data import BatchSampler

from .resumable_sampler import draw_seeds


@DATA_SAMPLERS.register_module()
class ResumableBatchSampler:
    """Wraps a batch sampler (``mmdet``'s ``AspectRatioBatchSampler``, or torch's plain one)
    so that its batches can be skipped without loading them, and each sample carries a draw
    seed.

    - :meth:`start_at` places the next iteration after ``n`` batches already trained: the
      index sampler is replayed (indices only, no image read) through whole epochs of a
      finite sampler and into the epoch where the run stopped;
    - each yielded batch is ``[(index, draw_seed), ...]``, the seed a function of the
      sampler's seed and the sample's place in the global stream (``(batch x batch_size +
      slot) x world_size + rank``), so that the data set (:class:`SeededDataset`) makes
      the same sample whichever worker makes it and wherever the run restarted -- with
      another number of processes and the same global batch too, where the index sampler
      gives each place the same index (mmengine's ``InfiniteSampler``, ``DefaultSampler``).

    Args:
        sampler: The index sampler (built by the runner).
        batch_size (int): Images per batch and process.
        batch_sampler (dict, optional): The batch sampler to wrap, e.g.
            ``dict(type='AspectRatioBatchSampler')``; None: torch's ``BatchSampler``.
        drop_last (bool): For torch's ``BatchSampler``. Defaults to False.
    """

    def __init__(self, sampler, batch_size: int, batch_sampler: Optional[dict] = None,
                 drop_last: bool = False) -> None:
        if getattr(sampler, 'yields_draw_seeds', False):
            raise TypeError(f'{type(sampler).__name__} already draws seeds; '
                            'ResumableBatchSampler wraps a sampler of plain indices '
                            '(InfiniteSampler, DefaultSampler)')
        self.sampler = sampler
        self.batch_size = batch_size
        self.batch_sampler = BatchSampler(sampler, batch_size, drop_last) \
            if batch_sampler is None else DATA_SAMPLERS.build(
                batch_sampler, default_args=dict(sampler=sampler, batch_size=batch_size))
        self.rank, self.world_size = get_dist_info()
        self._skip = 0  # batches of the next pass to leave out
        self._position = 0  # batches yielded since the run's start (all passes)

    @property
    def seed(self) -> int:
        return self.sampler.seed

    def start_at(self, batches_done: int) -> int:
        """Let the next batch be the one an uninterrupted run trains on after
        ``batches_done`` batches; returns the pass (epoch) of the index sampler it lies in,
        which the sampler is set to."""
        epoch, remaining = 0, batches_done
        if not isinstance(self.sampler, InfiniteSampler):
            while True:
                self._set_epoch(epoch)
                # whole passes only: a batch sampler left part-way may keep state (mmdet's
                # aspect-ratio buckets)
                length = sum(1 for _ in self.batch_sampler)
                if length == 0:
                    raise ValueError(f'a pass of {type(self.batch_sampler).__name__} over '
                                     f'{len(self.sampler)} samples gives no batch of '
                                     f'{self.batch_size}: nothing to resume in')
                if remaining < length:
                    break
                remaining, epoch = remaining - length, epoch + 1
        self._skip, self._position = remaining, batches_done
        return epoch

    def _set_epoch(self, epoch: int) -> None:
        if hasattr(self.sampler, 'set_epoch'):
            self.sampler.set_epoch(epoch)

    def __iter__(self) -> Iterator[List[Tuple[int, int]]]:
        skip, self._skip = self._skip, 0
        batches = iter(self.batch_sampler)
        for _ in range(skip):
            next(batches, None)
        for batch in batches:
            places = (self._position * self.batch_size + np.arange(len(batch))) \
                * self.world_size + self.rank
            self._position += 1
            yield list(zip(batch, draw_seeds(self.seed, 0, places).tolist()))

    def __len__(self) -> int:
        return len(self.batch_sampler)
