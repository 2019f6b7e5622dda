"""An iteration-based training loop that resumes without replaying its data."""
import copy
import logging
from typing import Dict, List, Optional, Tuple, Union

from mmengine.dataset import InfiniteSampler
from mmengine.logging import print_log
from mmengine.runner import IterBasedTrainLoop
from mmengine.runner.base_loop import BaseLoop
from mmengine.runner.loops import _InfiniteDataloaderIterator
from mmengine.runner.utils import calc_dynamic_intervals
from mmpretrain.registry import LOOPS
from torch.utils.data import DataLoader

from densevit_mm.datasets.samplers import ResumableBatchSampler

SEED_INFO = 'train_sampler_seed'  # message hub key; checkpoints carry it


@LOOPS.register_module()
class ResumableIterBasedTrainLoop(IterBasedTrainLoop):
    """mmengine's ``IterBasedTrainLoop`` (same arguments, same schedule and hooks) whose
    resume skips the batches already trained by index, instead of loading and augmenting
    every one of them again ("Advance dataloader N steps", mmengine#1520): a 160k-iteration
    run resumed near its end starts at once.

    The training loader is built with its data set wrapped in :class:`SeededDataset` and its
    batch sampler (or torch's, from ``batch_size`` and ``drop_last``) in
    :class:`ResumableBatchSampler`: every sample's augmentation is seeded by its place in the
    stream, so the resumed run sees the batches, images and augmentations an uninterrupted
    one sees (same number of processes; the same global batch on another number gives the
    same images and draws).  The sampler's seed is kept in the checkpoints' message hub, so
    a run without ``randomness.seed`` resumes in its own order.  Config keys of the loader
    stay where they are (``train_dataloader.dataset.data_root`` ...).

    Use ``train_cfg = dict(type='mmpretrain.ResumableIterBasedTrainLoop', max_iters=...)``
    with an index sampler (mmengine's ``InfiniteSampler`` or ``DefaultSampler``).
    """

    def __init__(self, runner, dataloader: Union[DataLoader, Dict], max_iters: int,
                 val_begin: int = 1, val_interval: int = 1000,
                 dynamic_intervals: Optional[List[Tuple[int, int]]] = None) -> None:
        if not isinstance(dataloader, dict):
            raise TypeError('ResumableIterBasedTrainLoop builds its data loader itself: give '
                            'train_dataloader as a config dict, not a built DataLoader')
        # IterBasedTrainLoop.__init__ without its data iterator, which starts loading at the
        # first batch: run() makes it once the resumed position is known
        BaseLoop.__init__(self, runner, self._resumable(dataloader))
        self._max_iters = int(max_iters)
        if self._max_iters != max_iters:
            raise ValueError(f'max_iters must be an integer, got {max_iters}')
        self._max_epochs, self._epoch, self._iter = 1, 0, 0
        self.val_begin, self.val_interval = val_begin, val_interval
        self.stop_training = False  # EarlyStoppingHook sets it
        self.runner.visualizer.dataset_meta = getattr(self.dataloader.dataset, 'metainfo', None)
        self.dataloader_iterator = None
        self.dynamic_milestones, self.dynamic_intervals = calc_dynamic_intervals(
            self.val_interval, dynamic_intervals)

    @staticmethod
    def _resumable(cfg: dict) -> dict:
        """The loader config with its data set and batch sampler wrapped; the rest as the
        runner builds it."""
        cfg = copy.deepcopy(cfg)
        sampler = cfg.get('sampler', {}).get('type')
        if sampler in ('ResumableSampler', 'mmpretrain.ResumableSampler'):
            raise TypeError('ResumableIterBasedTrainLoop takes an index sampler (InfiniteSampler '
                            'or DefaultSampler) and seeds the draws itself; ResumableSampler '
                            'goes with EpochBasedTrainLoop')
        # a config, built by the runner (which deep-copies the loader config: a built data set
        # would be copied whole)
        cfg['dataset'] = dict(type='mmpretrain.SeededDataset', dataset=cfg.pop('dataset'))
        cfg['batch_sampler'] = dict(type='mmpretrain.ResumableBatchSampler',
                                    batch_sampler=cfg.pop('batch_sampler', None),
                                    drop_last=cfg.pop('drop_last', False))
        return cfg

    def _start(self) -> None:
        """Restore the sampler's seed, place the loader after the batches done, make the
        data iterator."""
        batches: ResumableBatchSampler = self.dataloader.batch_sampler
        hub = self.runner.message_hub
        saved = hub.get_info(SEED_INFO)
        if saved is not None:
            batches.sampler.seed = saved
        hub.update_info(SEED_INFO, batches.sampler.seed)
        epoch = batches.start_at(self._iter)
        self.dataloader_iterator = _InfiniteDataloaderIterator(self.dataloader)
        self.dataloader_iterator._epoch = epoch
        if self._iter > 0:
            where = '' if isinstance(batches.sampler, InfiniteSampler) else \
                f' (pass {epoch + 1} over the data set)'
            print_log(f'resuming at iteration {self._iter}: its {self._iter} batches were '
                      f'skipped by index{where}, none of them loaded', logger='current',
                      level=logging.INFO)

    def run(self):
        """IterBasedTrainLoop.run with the data placed by index instead of replayed."""
        self.runner.call_hook('before_train')
        # the whole run is one big epoch, as in IterBasedTrainLoop
        self.runner.call_hook('before_train_epoch')
        self._start()
        while self._iter < self._max_iters and not self.stop_training:
            self.runner.model.train()
            self.run_iter(next(self.dataloader_iterator))
            self._decide_current_val_interval()
            if (self.runner.val_loop is not None and self._iter >= self.val_begin
                    and (self._iter % self.val_interval == 0 or self._iter == self._max_iters)):
                self.runner.val_loop.run()
        self.runner.call_hook('after_train_epoch')
        self.runner.call_hook('after_train')
        return self.runner.model
