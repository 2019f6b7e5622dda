"""The images of a folder packed in tar shards, read map-style by offset."""
import os
import os.path as osp
from collections import OrderedDict
from typing import Optional

from mmengine.logging import print_log
from mmpretrain.registry import DATASETS

from .image_shards import ShardError, read_index, stage_shards
from .unlabeled_image_folder import UnlabeledImageFolder


@DATASETS.register_module()
class UnlabeledImageShards(UnlabeledImageFolder):
    # descriptors a process keeps open (a data set of thousands of shards stays far from the
    # usual limit of 1024)
    open_shards = 64

    """:class:`UnlabeledImageFolder` reading a folder's images from the tar shards that
    ``tools/make_shards.py`` wrote: the same images in the same order, the same draws
    ``(index, draw_seed)`` through ``ResumableSampler`` (exact mid-epoch resume, every image
    once per epoch across ranks), the same rules for unreadable and oversized images (named
    ``<shard>/<member>``), and the file-list fingerprint the resume check compares.

    Each image is one ``pread`` at its offset; its bytes are checked (header, pixel limit)
    and decoded with the settings of the pipeline's ``LoadImageFromFile``, as for the
    folder: configs switch between the two by the data set's type and ``data_root`` alone.

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
        self._files = OrderedDict()  # shard number -> open descriptor, least recent first
        self._pid = None
        super().__init__(data_root=data_root, **kwargs)

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

    def _read_bytes(self, info: dict) -> bytes:
        """The image's bytes: one ``pread`` at its offset in its shard."""
        if self._pid != os.getpid():  # forked: the parent's descriptors are its own
            for fd in self._files.values():
                os.close(fd)
            self._files, self._pid = OrderedDict(), os.getpid()
        fd = self._files.get(info['shard'])
        if fd is None:
            if len(self._files) >= self.open_shards:
                os.close(self._files.popitem(last=False)[1])
            fd = self._files[info['shard']] = os.open(
                osp.join(self._shard_dir, self._shard_names[info['shard']]), os.O_RDONLY)
        else:
            self._files.move_to_end(info['shard'])
        data = os.pread(fd, info['size'], info['offset'])
        if len(data) != info['size']:
            raise ShardError(
                f'{osp.join(self._shard_dir, self._shard_names[info["shard"]])} ends before '
                f'{info["img_path"]} ({len(data)} of its {info["size"]} bytes): the shard was '
                'truncated after the run started. Copy it again, or write the shards again '
                'with tools/make_shards.py')
        return data

    def __del__(self) -> None:
        if getattr(self, '_pid', None) == os.getpid():
            for fd in self._files.values():
                os.close(fd)
