"""Per-sample seeding of the augmentation, so that a sample's random draws do not depend on
the worker process that made it or on how long that worker has run."""
import random
from contextlib import contextmanager
from typing import Optional, Tuple, Union

import numpy as np
from mmengine.registry import DATASETS as ROOT_DATASETS
from mmpretrain.registry import DATASETS
from torch.utils.data import get_worker_info


@contextmanager
def seeded(seed: Optional[int]):
    """Seed NumPy's and Python's global generators (those the transforms draw from) for one
    sample, and put the previous states back afterwards -- in the training process; a data
    loader worker only makes samples, each seeded, so nothing there needs the old states
    (restoring them cost 0.05 ms per image)."""
    if seed is None:
        yield
        return
    if get_worker_info() is not None:
        np.random.seed(seed)
        random.seed(seed)
        yield
        return
    np_state, py_state = np.random.get_state(), random.getstate()
    np.random.seed(seed)
    random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(np_state)
        random.setstate(py_state)


@DATASETS.register_module()
class SeededDataset:
    """Any data set (mmseg's, mmdet's) taking draws ``(index, draw_seed)``: each sample's
    pipeline runs with the global generators seeded by its draw seed.

    ``ResumableIterBasedTrainLoop`` wraps its training set in this and draws through
    :class:`ResumableBatchSampler`, so that a resumed run makes the same samples as an
    uninterrupted one without replaying the data before it.  Everything else (``len``,
    ``metainfo``, ``get_data_info`` ...) is the wrapped data set's; a plain index is passed
    on unseeded.

    Args:
        dataset (dict | Dataset): The data set, or its config (built in the current scope:
            mmseg's, mmdet's).
    """

    takes_draw_seeds = True

    def __init__(self, dataset) -> None:
        self.dataset = ROOT_DATASETS.build(dataset) if isinstance(dataset, dict) else dataset

    def __getitem__(self, draw: Union[int, Tuple[int, int]]):
        index, seed = draw if isinstance(draw, tuple) else (draw, None)
        with seeded(seed):
            return self.dataset[index]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getattr__(self, name: str):
        if name == 'dataset':  # not set yet (unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.dataset!r})'
