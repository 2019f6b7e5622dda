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

    Each unreadable image the data set replaced (one that cannot be decoded, or whose
    header says it has more than the data set's ``max_pixels``) is logged once with its path
    and reason (twice at most if two ranks meet it within one ``interval``).  Every ``interval``
    iterations and after every epoch the ranks' lists are merged; after every epoch the list
    is written to ``<work_dir>/unreadable_images.txt`` and summed up in the log.  When more
    than ``max_share`` of the data set is unreadable, every rank stops training, with the
    list.  The list is kept in checkpoints, so a
    resumed run goes on counting.

    Args:
        max_share (float): Largest tolerated share of unreadable images. Defaults to 0.001
            (0.1%, about 1,300 ImageNet images).
        interval (int): Iterations between checks of the limit. Defaults to 100.
    """

    priority = 'NORMAL'

    def __init__(self, max_share: float = 0.001, interval: int = 100) -> None:
        if not 0 <= max_share < 1:
            raise ValueError(f'max_share must be in [0, 1), got {max_share}')
        if interval < 1:
            raise ValueError(f'interval must be >= 1, got {interval}')
        self.max_share = max_share
        self.interval = interval
        self.unreadable: Dict[str, str] = {}
        self.limit = self.num_images = 0

    def before_train(self, runner) -> None:
        dataset = runner.train_dataloader.dataset
        if not getattr(dataset, 'skip_unreadable', False):
            raise ValueError(f'UnreadableImageHook counts the images that the data set skips, but '
                             f'{type(dataset).__name__} does not skip any: use '
                             'UnlabeledImageFolder or UnlabeledImageShards with '
                             'skip_unreadable=True, or drop the hook')
        self.num_images = len(dataset)
        self.limit = int(self.max_share * self.num_images)
        self.unreadable = dict(runner.message_hub.get_info('unreadable_images') or {})

    def after_train_iter(self, runner, batch_idx: int, data_batch: Optional[dict] = None,
                         outputs: Optional[dict] = None) -> None:
        samples: Sequence = (data_batch or {}).get('data_samples') or ()
        for sample in samples:
            for path, reason in sample.metainfo.get('skipped_unreadable', ()):
                if path not in self.unreadable:
                    self.unreadable[path] = reason
                    runner.logger.warning(f'skipped unreadable training image {path}: {reason} '
                                          f'({len(self.unreadable)} so far)')
        if self.every_n_train_iters(runner, self.interval):
            self._merge_and_check(runner)

    def after_train_epoch(self, runner) -> None:
        merged = self._merge_and_check(runner)
        if merged and is_main_process():
            path = osp.join(runner.work_dir, 'unreadable_images.txt')
            atomic_write_text(path, ''.join(f'{p}\t{why}\n' for p, why in sorted(merged.items())))
            runner.logger.warning(f'{len(merged)} of {self.num_images} training images were '
                                  f'unreadable and skipped so far; the list is in {path}')

    def _merge_and_check(self, runner) -> Dict[str, str]:
        """Every rank's list, merged (all ranks call this at the same iteration)."""
        merged = dict(self.unreadable)
        if get_world_size() > 1:
            for part in all_gather_object(self.unreadable):
                merged.update(part)
        self.unreadable = merged  # a file another rank reported is not logged again here
        runner.message_hub.update_info('unreadable_images', merged)  # into the checkpoints
        if len(merged) > self.limit:
            listing = '\n'.join(f'  {p}: {why}' for p, why in sorted(merged.items())[:50])
            more = f'\n  ... and {len(merged) - 50} more' if len(merged) > 50 else ''
            raise RuntimeError(
                f'{len(merged)} training images are unreadable, more than max_share='
                f'{self.max_share:g} of the {self.num_images} images allows ({self.limit}); is '
                f'the data folder right? Run tools/check_images.py on it. Unreadable:\n'
                f'{listing}{more}')
        return merged
