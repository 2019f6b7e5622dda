"""The images of a folder packed in tar shards, read map-style by offset."""
import os
import os.path as osp
from typing import Optional

import mmcv
import numpy as np
from mmcv.transforms import LoadImageFromFile
from mmengine.logging import print_log
from mmpretrain.registry import DATASETS

from .image_check import too_large_reason, undecodable_reason
from .image_shards import read_index, stage_shards
from .unlabeled_image_folder import UnlabeledImageFolder


@DATASETS.register_module()
class UnlabeledImageShards(UnlabeledImageFolder):
    """:class:`UnlabeledImageFolder` reading a folder's images from the tar shards that
    ``tools/make_shards.py`` wrote: the same images in the same order, the same draws
    ``(index, draw_seed)`` through ``ResumableSampler`` (exact mid-epoch resume, every image
    once per epoch across ranks), the same rules for unreadable and oversized images (named
    ``<shard>/<member>``), and the file-list fingerprint the resume check compares.

    Each image is one ``pread`` at its offset; its bytes are checked (header, pixel limit)
    and decoded as the pipeline's ``LoadImageFromFile`` would decode the file (its
    ``color_type``, ``imdecode_backend``, ``to_float32``), then the rest of the pipeline runs.
    The pipeline therefore starts with ``LoadImageFromFile``, as for the folder: configs
    switch between the two by the data set's type and ``data_root`` alone.

    A shard missing, or of another size than its index says (a truncated copy), is refused
    when the data set is built, naming it.

    Args:
        data_root (str): The shard folder (``index.json`` and the shards).
        stage_to (str, optional): A node-local folder to copy the shards to at start (once
            per node; shards already there with the right size are kept) and read from.
        **kwargs: :class:`UnlabeledImageFolder`'s arguments (``pipeline``,
            ``skip_unreadable``, ``max_pixels`` ...); ``data_prefix`` and ``extensions``
            are the packed folder's business and are not taken.
    """

    listing_tool = 'tools/check_images.py on the folder the shards were made from lists'

    def __init__(self, data_root: str, stage_to: Optional[str] = None, **kwargs) -> None:
        for key in ('data_prefix', 'extensions', 'ann_file'):
            if kwargs.pop(key, None):
                raise TypeError(f'UnlabeledImageShards takes no {key}: the shards hold what '
                                'tools/make_shards.py packed from the folder')
        self.stage_to = stage_to
        self._files = {}  # shard number -> open file descriptor (per process)
        self._pid = None
        self._member = (None, b'')  # (index, bytes) of the image read last
        super().__init__(data_root=data_root, **kwargs)
        loaders = [t for t in self.pipeline.transforms[:1] if isinstance(t, LoadImageFromFile)]
        if not loaders:
            raise ValueError('the pipeline of UnlabeledImageShards must start with '
                             "LoadImageFromFile: its decoding settings are used on each shard "
                             f'member; got {self.pipeline.transforms[:1]}')
        self._loader = loaders[0]
        self.pipeline.transforms = self.pipeline.transforms[1:]

    @property
    def img_prefix(self) -> str:
        return self.data_root

    def load_data_list(self) -> list:
        index = read_index(self.data_root)
        shards, images = index['shards'], index['images']
        self._shard_dir = self.data_root if self.stage_to is None else stage_shards(
            self.data_root, shards, self.stage_to,
            log=lambda message: print_log(message, logger='current'))
        self._shard_names = [s['name'] for s in shards]
        data_list = [dict(img_path=osp.join(self.data_root, shards[k]['name'], name),
                          shard=k, offset=offset, size=size)
                     for k, offset, size, name in zip(images['shard'], images['offset'],
                                                      images['size'], images['name'])]
        total = sum(s['bytes'] for s in shards) / 1e9
        where = '' if self.stage_to is None else f', read from {self._shard_dir}'
        print_log(f'{type(self).__name__}: {len(data_list)} images in {len(shards)} shards '
                  f'({total:.2f} GB) in {self.data_root}{where}', logger='current')
        return data_list

    def _read(self, i: int) -> bytes:
        """Image ``i``'s bytes, one ``pread`` (kept until another image is read: the checks
        and the decode of one draw read it once)."""
        if self._member[0] == i:
            return self._member[1]
        if self._pid != os.getpid():  # descriptors are not shared across forks' reopen
            self._files, self._pid = {}, os.getpid()
        info = self.get_data_info(i)
        fd = self._files.get(info['shard'])
        if fd is None:
            fd = self._files[info['shard']] = os.open(
                osp.join(self._shard_dir, self._shard_names[info['shard']]), os.O_RDONLY)
        data = os.pread(fd, info['size'], info['offset'])
        self._member = (i, data)
        return data

    def _too_large(self, i: int) -> Optional[str]:
        return too_large_reason(self._read(i), self.max_pixels)

    def _unreadable_reason(self, i: int) -> Optional[str]:
        return undecodable_reason(self._read(i), self._loader.imdecode_backend, self.max_pixels)

    def prepare_data(self, i: int) -> dict:
        """Decode image ``i`` as the pipeline's ``LoadImageFromFile`` would, then run the
        rest of the pipeline."""
        results = self.get_data_info(i)
        loader = self._loader
        img = mmcv.imfrombytes(self._read(i), flag=loader.color_type,
                               backend=loader.imdecode_backend)
        if img is None:
            raise ValueError(f'failed to load image: {results["img_path"]}')
        if loader.to_float32:
            img = img.astype(np.float32)
        results.update(img=img, img_shape=img.shape[:2], ori_shape=img.shape[:2])
        return self.pipeline(results)
