"""Every image under a folder, for self-supervised pretraining."""
import os.path as osp
from collections import Counter
from typing import Optional, Sequence, Tuple, Union

import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine import fileio
from mmengine.logging import print_log
from mmpretrain.datasets import CustomDataset
from mmpretrain.registry import DATASETS
from torch.utils.data import get_worker_info

from .image_check import IMAGE_EXTENSIONS, MAX_PIXELS, too_large_reason, undecodable_reason
from .seeded_dataset import seeded
from .worker_memory import keep_freed_image_memory


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

    The pipeline starts with ``LoadImageFromFile``: the data set reads each image's bytes
    once (with the loader's ``backend_args``), checks its header, and decodes it with the
    loader's settings (``color_type``, ``imdecode_backend``, ``to_float32``); the rest of
    the pipeline runs on the decoded image.

    Args:
        data_root (str): Root folder. Defaults to ''.
        data_prefix (str | dict): Sub-folder of the images. Defaults to ''.
        extensions (Sequence[str]): File name endings taken. Defaults to
            ``IMAGE_EXTENSIONS`` (mmpretrain's, ``.tiff`` and ``.webp``).
        skip_unreadable (bool): Replace unreadable images instead of raising. Needs
            ``UnreadableImageHook`` in the config. Defaults to False.
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
        self.max_substitutes = max_substitutes
        self._left_out = Counter()  # extension -> files left out while listing
        self._unreadable = {}  # path -> reason, found by this process
        self._bytes = (None, None, b'')  # (index, data info, bytes) of the image read last
        super().__init__(data_root=data_root, data_prefix=data_prefix, with_label=False,
                         extensions=extensions, **kwargs)
        # the loader's settings decode the bytes the data set reads; an empty pipeline only
        # lists the images (tools/check_images.py, tools/make_shards.py)
        first = self.pipeline.transforms[:1]
        if first and not isinstance(first[0], LoadImageFromFile):
            raise ValueError(f'the pipeline of {type(self).__name__} must start with '
                             'LoadImageFromFile: the data set reads each image with its '
                             f'settings; got {first[0]}')
        self._loader = first[0] if first else LoadImageFromFile()
        self.pipeline.transforms = self.pipeline.transforms[1:]

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

    def _read_bytes(self, info: dict) -> bytes:
        """The bytes of the image of ``info``, as ``LoadImageFromFile`` reads them."""
        return fileio.get(info['img_path'], backend_args=self._loader.backend_args)

    def _read(self, i: int) -> Tuple[dict, bytes]:
        """Image ``i``'s data info and bytes, kept for the rest of the draw: its header
        check, decode and (for a bad one) reason come from one read."""
        if self._bytes[0] != i:
            info = self.get_data_info(i)
            self._bytes = (i, info, self._read_bytes(info))
        return self._bytes[1], self._bytes[2]

    def _unreadable_reason(self, i: int) -> Optional[str]:
        """Why image ``i`` cannot be read and decoded; None if it can."""
        try:
            data = self._read(i)[1]
        except OSError as err:
            return f'cannot be read ({err.strerror or err})'
        return undecodable_reason(data, self._loader.imdecode_backend, self.max_pixels)

    def prepare_data(self, i: int) -> dict:
        """Decode image ``i`` as the pipeline's ``LoadImageFromFile`` would, then run the
        rest of the pipeline."""
        info, data = self._read(i)
        results = dict(info)
        loader = self._loader
        img = mmcv.imfrombytes(data, flag=loader.color_type,
                               backend=loader.imdecode_backend)
        if img is None:
            raise ValueError(f'failed to load image: {results["img_path"]}')
        if loader.to_float32:
            img = img.astype(np.float32)
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return self.pipeline(results)

    def __getitem__(self, draw: Union[int, Tuple[int, int]]) -> dict:
        if not self._fully_initialized:
            self.full_init()
        if get_worker_info() is not None:
            keep_freed_image_memory()
        index, seed = draw if isinstance(draw, tuple) else (draw, None)
        self._bytes = (None, None, b'')  # read afresh in each draw
        skipped, tried = [], []
        for attempt in range(self.max_substitutes + 1):
            i = (index + attempt) % len(self)
            path = self.get_data_info(i)['img_path']
            tried.append(path)
            if path in self._unreadable:
                continue
            # from the header, before the image is decoded (OpenCV takes up to 2**30)
            try:
                reason, error = too_large_reason(self._read(i)[1], self.max_pixels), None
            except OSError as err:
                reason, error = self._unreadable_reason(i), err
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
