"""Every image under a folder, for self-supervised pretraining."""
import os.path as osp
from collections import Counter
from typing import Optional, Sequence, Tuple, Union

from mmengine.logging import print_log
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS

from .image_check import IMAGE_EXTENSIONS, MAX_PIXELS, too_large_reason, unreadable_reason
from .seeded_dataset import seeded


class UnreadableImageError(RuntimeError):
    """A training image that cannot be read or decoded."""


@DATASETS.register_module()
class UnlabeledImageFolder(CustomDataset):
    """All images below ``data_root/data_prefix`` (class sub-folders are searched, labels
    are not used): ImageNet's ``train/`` or any folder of photographs.

    mmpretrain's ``CustomDataset`` with ``with_label=False``, and:

    - ``.tiff`` and ``.webp`` are taken too, and the number of images found per extension
      (and of other files left out) is logged when the list is built;
    - with :class:`ResumableSampler`, each draw ``(index, draw_seed)`` seeds the
      augmentation, so an image's views do not depend on the worker process or on where
      a resumed run restarted;
    - an image that cannot be read (empty, truncated, not an image), or whose header says it
      has more than ``max_pixels`` pixels, raises an error that names it, or, with
      ``skip_unreadable=True``, is replaced by the next readable image of the list and
      reported in the sample's metainfo ``skipped_unreadable`` (a list of
      ``(path, reason)``); :class:`UnreadableImageHook` logs, counts and limits these.
      Every image is decoded at most once per worker process to find it bad; one over the
      limit is never decoded (its header is read before each draw).

    Args:
        data_root (str): Root folder. Defaults to ''.
        data_prefix (str | dict): Sub-folder of the images. Defaults to ''.
        extensions (Sequence[str]): File name endings taken. Defaults to
            ``IMAGE_EXTENSIONS`` (mmpretrain's, ``.tiff`` and ``.webp``).
        skip_unreadable (bool): Replace unreadable images instead of raising. Needs
            ``UnreadableImageHook`` in the config. Defaults to False.
        decode_backend (str): The decoder that ``LoadImageFromFile`` uses in the pipeline
            (``imdecode_backend``), used to tell an unreadable file from a pipeline error.
            Defaults to 'cv2'.
        max_substitutes (int): Unreadable images in a row after which a draw fails.
            Defaults to 64.
        max_pixels (int): Largest width x height decoded; larger images are unreadable.
            Defaults to ``MAX_PIXELS`` (2**27 = 134.2 MP, about twice the largest ImageNet
            images).
        **kwargs: Other arguments of ``CustomDataset`` (``pipeline``, ``ann_file``, ...).
    """

    takes_draw_seeds = True  # ResumableSampler checks this
    # where the unreadable files are listed (named in the errors)
    listing_tool = 'tools/check_images.py lists'

    def __init__(self,
                 data_root: str = '',
                 data_prefix: Union[str, dict] = '',
                 extensions: Sequence[str] = IMAGE_EXTENSIONS,
                 skip_unreadable: bool = False,
                 decode_backend: str = 'cv2',
                 max_substitutes: int = 64,
                 max_pixels: int = MAX_PIXELS,
                 **kwargs) -> None:
        if max_substitutes < 0:
            raise ValueError(f'max_substitutes must be >= 0, got {max_substitutes}')
        if max_pixels < 1:
            raise ValueError(f'max_pixels must be >= 1, got {max_pixels} (the default, '
                             f'{MAX_PIXELS}, takes every ImageNet, COCO and ADE20K image)')
        self.max_pixels = max_pixels
        self.skip_unreadable = skip_unreadable
        self.decode_backend = decode_backend
        self.max_substitutes = max_substitutes
        self._left_out = Counter()  # extension -> files left out while listing
        self._unreadable = {}  # path -> reason, found by this process
        super().__init__(data_root=data_root, data_prefix=data_prefix, with_label=False,
                         extensions=extensions, **kwargs)

    def is_valid_file(self, filename: str) -> bool:
        taken = super().is_valid_file(filename)
        if not taken:
            self._left_out[osp.splitext(filename)[1].lower() or '(no extension)'] += 1
        return taken

    def load_data_list(self) -> list:
        data_list = super().load_data_list()
        found = Counter(osp.splitext(info['img_path'])[1].lower() for info in data_list)
        message = (f'{type(self).__name__}: {len(data_list)} images in {self.img_prefix} ('
                   + ', '.join(f'{n} {ext}' for ext, n in sorted(found.items()))
                   + f'); extensions taken: {" ".join(sorted(self.extensions))}')
        if self._left_out:
            message += ('; other files left out: '
                        + ', '.join(f'{n} {ext}' for ext, n in self._left_out.most_common()))
        print_log(message, logger='current')
        return data_list

    def _too_large(self, i: int) -> Optional[str]:
        """Why image ``i`` is over the pixel limit, from its header; None if it is not."""
        return too_large_reason(self.get_data_info(i)['img_path'], self.max_pixels)

    def _unreadable_reason(self, i: int) -> Optional[str]:
        """Why image ``i`` cannot be read and decoded; None if it can."""
        return unreadable_reason(self.get_data_info(i)['img_path'], self.decode_backend,
                                 self.max_pixels)

    def __getitem__(self, draw: Union[int, Tuple[int, int]]) -> dict:
        if not self._fully_initialized:
            self.full_init()
        index, seed = draw if isinstance(draw, tuple) else (draw, None)
        skipped, tried = [], []
        for attempt in range(self.max_substitutes + 1):
            i = (index + attempt) % len(self)
            path = self.get_data_info(i)['img_path']
            tried.append(path)
            if path in self._unreadable:
                continue
            # from the header, before the pipeline decodes it (OpenCV takes up to 2**30)
            reason, error = self._too_large(i), None
            if reason is None:
                try:
                    with seeded(seed):
                        data = self.prepare_data(i)
                except Exception as err:
                    reason = self._unreadable_reason(i)
                    if reason is None:  # the file is fine: a pipeline error, not ours to hide
                        raise
                    error = err
            if reason is not None:
                if not self.skip_unreadable:
                    raise UnreadableImageError(
                        f'training image {path} {reason}. Remove it ({self.listing_tool} '
                        'all such files) or set skip_unreadable=True on the dataset with '
                        'UnreadableImageHook in custom_hooks') from error
                self._unreadable[path] = reason
                skipped.append((path, reason))
                continue
            if skipped and isinstance(data, dict) and 'data_samples' in data:
                data['data_samples'].set_field(skipped, 'skipped_unreadable',
                                               field_type='metainfo')
            return data
        raise UnreadableImageError(
            f'{self.max_substitutes + 1} images in a row from index {index} of {self.img_prefix} '
            f'are unreadable ({", ".join(tried[:5])} ...): is the folder right? '
            f'{self.listing_tool} every unreadable file')
