"""Images packed in tar shards (the WebDataset layout) with an index of where each one lies.

A million small files on a network file system cost a metadata request each; a few hundred
shards of ~1 GB are read as large files, and can be copied to node-local disk at start.
``tools/make_shards.py`` writes them; :class:`UnlabeledImageShards` reads them map-style, by
offset, so that the sampler, resume and bad-image rules are the image folder's.

Layout of a shard folder::

    shard-000000.tar ...     plain tar files, one member per image, named by its path in the
                             source folder (WebDataset: key = path without extension)
    index.json               {"format": FORMAT, "version": 1,
                              "shards": [{"name", "bytes", "images"}, ...],
                              "images": {"shard": [...], "offset": [...], "size": [...],
                                         "name": [...]}}   (offset: of the member's data)
"""
import fcntl
import hashlib
import json
import os
import os.path as osp
import shutil
import socket
import tarfile
import time
from typing import Callable, Iterable, List, Optional

FORMAT = 'densevit-image-shards'
INDEX = 'index.json'
SHARD_BYTES = 10 ** 9  # ~1 GB per shard: few files, each large enough to stream


class ShardError(RuntimeError):
    """A shard folder that does not hold what its index says."""


def write_shards(folder: str, names: Iterable[str], out_dir: str,
                 shard_bytes: int = SHARD_BYTES, prefix: str = 'shard',
                 progress: Optional[Callable[[int], None]] = None) -> dict:
    """Pack ``folder/<name>`` for every name, in order, into tar shards of at most
    ``shard_bytes`` (or one image, if larger) in ``out_dir``, then write the index.

    Every file is written under a temporary name and renamed when complete, the index last:
    an interrupted run leaves no index, so nothing reads a half-written folder.  Members carry
    no owner, time or mode of the source (the same folder gives the same bytes).

    Returns:
        dict: The index.
    """
    os.makedirs(out_dir, exist_ok=True)
    shards, images = [], dict(shard=[], offset=[], size=[], name=[])
    tar, tar_path, done = None, None, 0

    def close():
        tar.close()
        final = osp.join(out_dir, shards[-1]['name'])
        os.replace(tar_path, final)
        shards[-1]['bytes'] = osp.getsize(final)

    for name in names:
        path = osp.join(folder, name)
        size = osp.getsize(path)
        # a member takes its 512-byte header and its data rounded up to 512 bytes; a closed tar
        # ends with two empty blocks and is padded to tarfile.RECORDSIZE
        end = tar.fileobj.tell() + 512 + -(-size // 512) * 512 + 1024 if tar else 0
        if tar is None or (shards[-1]['images'] and
                           -(-end // tarfile.RECORDSIZE) * tarfile.RECORDSIZE > shard_bytes):
            if tar is not None:
                close()
            shards.append(dict(name=f'{prefix}-{len(shards):06d}.tar', bytes=0, images=0))
            tar_path = osp.join(out_dir, shards[-1]['name'] + '.tmp')
            tar = tarfile.open(tar_path, 'w', format=tarfile.PAX_FORMAT)
        info = tarfile.TarInfo(name)
        info.size, info.mode = size, 0o644
        with open(path, 'rb') as f:
            tar.addfile(info, f)
        images['shard'].append(len(shards) - 1)
        # the data ends the member, padded to 512 bytes (headers, PAX ones too, come before)
        images['offset'].append(tar.offset - -(-size // 512) * 512)
        images['size'].append(size)
        images['name'].append(name)
        shards[-1]['images'] += 1
        done += 1
        if progress is not None:
            progress(done)
    if tar is None:
        raise ShardError(f'no image to pack from {folder}')
    close()
    index = dict(format=FORMAT, version=1, shards=shards, images=images)
    tmp = osp.join(out_dir, INDEX + '.tmp')
    with open(tmp, 'w') as f:
        json.dump(index, f)
    os.replace(tmp, osp.join(out_dir, INDEX))
    return index


def read_index(shard_dir: str) -> dict:
    """The index of ``shard_dir``, refused with what is wrong (no index, another format, a
    shard missing or of another size than written -- truncated by a copy, say)."""
    path = osp.join(shard_dir, INDEX)
    if not osp.isfile(path):
        raise ShardError(f'{shard_dir} has no {INDEX}: is it a folder written by '
                         'tools/make_shards.py (which writes the index last, when every shard '
                         'is complete)?')
    with open(path) as f:
        try:
            index = json.load(f)
        except json.JSONDecodeError as err:
            raise ShardError(f'{path} is not readable JSON ({err}): write the shards again '
                             'with tools/make_shards.py') from None
    if index.get('format') != FORMAT or index.get('version') != 1:
        raise ShardError(f'{path} is not an index of {FORMAT} version 1 (tools/make_shards.py)')
    check_shards(shard_dir, index['shards'])
    return index


def check_shards(shard_dir: str, shards: List[dict]) -> None:
    """Every shard is in ``shard_dir`` with the size the index gives."""
    for shard in shards:
        path = osp.join(shard_dir, shard['name'])
        if not osp.isfile(path):
            raise ShardError(f'shard {path} is missing ({len(shards)} shards are listed in '
                             f'{osp.join(shard_dir, INDEX)})')
        size = osp.getsize(path)
        if size != shard['bytes']:
            raise ShardError(
                f'shard {path} has {size} bytes, its index says {shard["bytes"]}: it is '
                f'{"truncated" if size < shard["bytes"] else "not the one indexed"} (an '
                'interrupted copy?). Copy it again, or write the shards again with '
                'tools/make_shards.py')


def stage_shards(shard_dir: str, shards: List[dict], stage_to: str,
                 log: Callable[[str], None] = print) -> str:
    """Copy the shards to a folder of ``stage_to`` (node-local disk) named by their index's
    hash -- two shard sets staged to one place never mix --, once per node: the processes of
    a node take a file lock in turn, and a shard already there with the indexed size is kept.
    Each copy is renamed into place when complete.  Returns the folder."""
    with open(osp.join(shard_dir, INDEX), 'rb') as f:
        local_dir = osp.join(stage_to, hashlib.sha1(f.read()).hexdigest()[:16])
    os.makedirs(local_dir, exist_ok=True)
    with open(osp.join(local_dir, '.staging.lock'), 'w') as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        start, copied = time.time(), 0
        for shard in shards:
            target = osp.join(local_dir, shard['name'])
            if osp.isfile(target) and osp.getsize(target) == shard['bytes']:
                continue
            partial = f'{target}.{socket.gethostname()}.{os.getpid()}.tmp'
            shutil.copyfile(osp.join(shard_dir, shard['name']), partial)
            os.replace(partial, target)
            copied += shard['bytes']
        if copied:
            log(f'staged {copied / 1e9:.2f} GB of shards from {shard_dir} to {local_dir} in '
                f'{time.time() - start:.0f} s')
    check_shards(local_dir, shards)
    return local_dir
