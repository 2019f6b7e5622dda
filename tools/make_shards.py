"""Pack a pretraining image folder into tar shards (WebDataset layout) with an offset index.

    python tools/make_shards.py data/imagenet/train data/imagenet_shards [--shard-size 1GB]

Takes the files that the pretraining data set takes from the folder (``UnlabeledImageFolder``:
class sub-folders searched, the same extensions), in its order, and writes
``shard-000000.tar`` ... of at most ``--shard-size`` each (one member per image, named by its
path in the folder, bytes as they are) and ``index.json`` (each image's shard, offset and
size), with a progress bar and ETA.  Each file is renamed into place when complete, the index
last.  Train from the shards with ``configs/pretrain/densevit_s_shards.py`` (data set
``UnlabeledImageShards``; ``--cfg-options train_dataloader.dataset.data_root=DIR
train_dataloader.dataset.stage_to=/local/scratch/DIR`` to copy them to node-local disk at
start).  Unreadable images are packed as they are and skipped in training as from the folder;
``tools/check_images.py`` lists them first.
"""
import argparse
import os.path as osp
import re
import sys
import time

from mmengine.utils import ProgressBar

from densevit_mm.datasets import UnlabeledImageFolder, write_shards

UNITS = {'': 1, 'B': 1, 'KB': 10 ** 3, 'MB': 10 ** 6, 'GB': 10 ** 9, 'TB': 10 ** 12}


def parse_size(text: str) -> int:
    """``'1GB'`` -> 10**9; ``'500MB'``, ``'1.5GB'``, plain bytes."""
    match = re.fullmatch(r'\s*([0-9]*\.?[0-9]+)\s*([KMGT]?B?)\s*', text.upper())
    if not match or float(match.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f'{text!r} is not a size such as 1GB, 500MB or 65536')
    return int(float(match.group(1)) * UNITS[match.group(2)])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('folder', help='the image folder (data_root/data_prefix in training)')
    parser.add_argument('out', help='the shard folder to write')
    parser.add_argument('--shard-size', type=parse_size, default='1GB',
                        help='largest shard (default 1GB; an image larger than this gets a '
                        'shard of its own)')
    args = parser.parse_args(argv)
    if not osp.isdir(args.folder):
        parser.error(f'{args.folder} is not a folder')
    if osp.exists(osp.join(args.out, 'index.json')):
        parser.error(f'{args.out} already holds shards (index.json): give another folder, or '
                     'remove it first')
    dataset = UnlabeledImageFolder(data_root=args.folder, pipeline=[])  # logs what it found
    names = [osp.relpath(dataset.get_data_info(i)['img_path'], args.folder)
             for i in range(len(dataset))]
    start = time.time()
    bar = ProgressBar(len(names))  # elapsed time and ETA
    index = write_shards(args.folder, names, args.out, args.shard_size,
                         progress=lambda done: bar.update())
    total = sum(s['bytes'] for s in index['shards'])
    print(f'\n{len(names)} images in {len(index["shards"])} shards, {total / 1e9:.2f} GB, '
          f'in {args.out} ({time.time() - start:.0f} s)')
    return 0


if __name__ == '__main__':
    sys.exit(main())
