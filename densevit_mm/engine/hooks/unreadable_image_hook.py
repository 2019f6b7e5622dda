"""Logs, counts and limits the training images that the data set had to skip."""
import os.path as osp
from typing import Dict, Optional, Sequence

from mmengine.dist import all_gather_object, get_world_size, is_main_process
from mmengine.hooks import Hook
from mmpretrain.registry import HOOKS

from densevit_mm.checkpoint.checkpoint_file import atomic_write_text


@HOOKS.register_module()
class UnreadableImageHook(Hook):
    """Companion of ``UnlabeledImageFolder(skip_unreadable=True)``: one bad file must not
    kill a run of days, but many bad files mean the data is wrong.

    Each unreadable image the data set replaced is logged once (per rank) with its path and
    reason.  After every epoch the ranks' lists are merged, written to
    ``<work_dir>/unreadable_images.txt`` and summed up in the log.  When more than
    ``max_share`` of the data set is unreadable, training stops with the list.

    Args:
        max_share (float): Largest tolerated share of unreadable images. Defaults to 0.001
            (0.1%, about 1,300 ImageNet images).
    """

    priority = 'NORMAL'

    def __init__(self, max_share: float = 0.001) -> None:
        if not 0 <= max_share < 1:
            raise ValueError(f'max_share must be in [0, 1), got {max_share}')
        self.max_share = max_share
        self.unreadable: Dict[str, str] = {}
        self.limit = 0

    def before_train(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        if not getattr(dataset, 'skip_unreadable', False):
            raise ValueError(f'UnreadableImageHook counts the images that the data set skips, but '
                             f'{type(dataset).__name__} does not skip any: use '
                             'UnlabeledImageFolder with skip_unreadable=True, or drop the hook')
        self.limit = int(self.max_share * len(dataset))
        self.num_images = len(dataset)

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        samples: Sequence = (data_batch or {}).get('data_samples') or ()
        for sample in samples:
            for path, reason in sample.metainfo.get('skipped_unreadable', ()):
                if path not in self.unreadable:
                    self.unreadable[path] = reason
                    runner.logger.warning(f'skipped unreadable training image {path}: {reason} '
                                          f'({len(self.unreadable)} so far on this rank)')
        if len(self.unreadable) > self.limit:
            self._stop(self.unreadable)

    def after_train_epoch(self, runner) -> None:
        merged = dict(self.unreadable)
        if get_world_size() > 1:
            for part in all_gather_object(self.unreadable):
                merged.update(part)
        if merged and is_main_process():
            path = osp.join(runner.work_dir, 'unreadable_images.txt')
            atomic_write_text(path, ''.join(f'{p}\t{why}\n' for p, why in sorted(merged.items())))
            runner.logger.warning(f'{len(merged)} of {self.num_images} training images were '
                                  f'unreadable and skipped so far; the list is in {path}')
        if len(merged) > self.limit:
            self._stop(merged)

    def _stop(self, unreadable: Dict[str, str]) -> None:
        listing = '\n'.join(f'  {p}: {why}' for p, why in sorted(unreadable.items())[:50])
        more = f'\n  ... and {len(unreadable) - 50} more' if len(unreadable) > 50 else ''
        raise RuntimeError(
            f'{len(unreadable)} training images are unreadable, more than max_share='
            f'{self.max_share:g} of the {self.num_images} images allows ({self.limit}); is the '
            f'data folder right? Run tools/check_images.py on it. Unreadable:\n{listing}{more}')
