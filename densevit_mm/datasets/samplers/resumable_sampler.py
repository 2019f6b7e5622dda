"""A sampler whose epochs can be resumed part-way, with reproducible augmentations."""
from typing import Iterator, Optional, Tuple

import numpy as np
from mmengine.dataset import DefaultSampler
from mmpretrain.registry import DATA_SAMPLERS


def draw_seeds(seed: int, epoch: int, indices: np.ndarray) -> np.ndarray:
    """A 32-bit seed per ``(seed, epoch, index)``: SplitMix64's finaliser on their mix, so
    neighbouring indices and epochs get unrelated seeds."""
    with np.errstate(over='ignore'):  # uint64 arithmetic wraps round, as intended
        z = (np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
             + np.uint64(epoch) * np.uint64(0xBF58476D1CE4E5B9)
             + indices.astype(np.uint64) * np.uint64(0x94D049BB133111EB))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(32)).astype(np.int64)


@DATA_SAMPLERS.register_module()
class ResumableSampler(DefaultSampler):
    """mmengine's ``DefaultSampler`` (same order of images) for runs that get interrupted.

    Two additions make a run resumed from a mid-epoch checkpoint see what an uninterrupted
    run would have seen:

    - each draw is ``(index, draw_seed)``; the dataset seeds the augmentation's random
      generators with ``draw_seed``, a function of the sampler seed, the epoch and the
      index, so an image's views no longer depend on which worker process drew it or on
      how long that worker has been running;
    - :meth:`skip` drops the start of one epoch, the part an interrupted run had done
      (``CrashSafeCheckpointHook`` calls it on resume).

    The dataset must take such draws (``UnlabeledImageFolder`` does).

    Args:
        dataset: The dataset; needs ``takes_draw_seeds = True``.
        shuffle (bool): Defaults to True.
        seed (int, optional): Shared by all ranks; None draws one and syncs it.
        round_up (bool): Defaults to True.
    """

    yields_draw_seeds = True  # ResumableBatchSampler checks this

    def __init__(self, dataset, shuffle: bool = True, seed: Optional[int] = None,
                 round_up: bool = True) -> None:
        if not getattr(dataset, 'takes_draw_seeds', False):
            raise TypeError(f'ResumableSampler yields (index, draw_seed) pairs, which '
                            f'{type(dataset).__name__} does not take: use UnlabeledImageFolder '
                            "or sampler=dict(type='DefaultSampler')")
        super().__init__(dataset, shuffle=shuffle, seed=seed, round_up=round_up)
        self._skip: Tuple[int, int] = (-1, 0)  # (epoch, samples of this rank to leave out)

    def skip(self, epoch: int, num_samples: int) -> None:
        """Leave out the first ``num_samples`` draws of this rank in ``epoch`` (only)."""
        if not 0 <= num_samples <= self.num_samples:
            raise ValueError(f'cannot skip {num_samples} of the {self.num_samples} samples '
                             'of an epoch on this rank')
        self._skip = (epoch, num_samples)

    def _skipped(self) -> int:
        epoch, num_samples = self._skip
        return num_samples if epoch == self.epoch else 0

    def __iter__(self) -> Iterator[Tuple[int, int]]:
        indices = np.fromiter(super().__iter__(), dtype=np.int64)[self._skipped():]
        seeds = draw_seeds(self.seed, self.epoch, indices)
        return iter(zip(indices.tolist(), seeds.tolist()))

    def __len__(self) -> int:
        return self.num_samples - self._skipped()
