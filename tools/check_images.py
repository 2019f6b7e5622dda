"""List the images of a pretraining folder that cannot be decoded, before a long run.

    python tools/check_images.py data/imagenet/train [--workers N] [--backend cv2]
        [--max-pixels N] [--out bad.txt]

Takes the files that the pretraining data set takes (``UnlabeledImageFolder``: class
sub-folders are searched; .jpg .jpeg .png .ppm .bmp .pgm .tif .tiff .webp), decodes each as
``LoadImageFromFile`` does, in parallel with a progress bar and ETA, and prints every file
that fails with the reason.  A file whose header says it has more pixels than
``--max-pixels`` (the data set's ``max_pixels``) fails without being decoded, as training
skips it.  Exit status 1 when any fails.
"""
import argparse
import os
import sys
import time
from functools import partial

from mmengine.utils import track_parallel_progress

from densevit_mm.checkpoint import atomic_write_text
from densevit_mm.datasets import MAX_PIXELS, UnlabeledImageFolder, unreadable_reason


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('folder', help='the folder given as data_root/data_prefix in training')
    parser.add_argument('--workers', type=int, default=os.cpu_count(),
                        help='decoding processes (default: all cores)')
    parser.add_argument('--backend', default='cv2', choices=['cv2', 'pillow', 'turbojpeg'],
                        help="LoadImageFromFile's imdecode_backend (default cv2)")
    parser.add_argument('--max-pixels', type=int, default=MAX_PIXELS,
                        help='flag images whose header says width x height is larger, as '
                        f"the data set's max_pixels does (default {MAX_PIXELS})")
    parser.add_argument('--out', help='also write the unreadable files, one per line, here')
    args = parser.parse_args()
    if not os.path.isdir(args.folder):
        parser.error(f'{args.folder} is not a folder')
    if args.max_pixels < 1:
        parser.error(f'--max-pixels must be >= 1, got {args.max_pixels}')

    dataset = UnlabeledImageFolder(data_root=args.folder, pipeline=[])  # logs what it found
    paths = [dataset.get_data_info(i)['img_path'] for i in range(len(dataset))]
    start = time.time()
    reasons = track_parallel_progress(partial(unreadable_reason, backend=args.backend,
                                              max_pixels=args.max_pixels), paths,
                                      nproc=max(1, args.workers),
                                      chunksize=max(1, min(256, len(paths) // (8 * args.workers))))
    bad = [(path, why) for path, why in zip(paths, reasons) if why is not None]
    print()
    for path, why in bad:
        print(f'{path}\t{why}')
    print(f'{len(bad)} of {len(paths)} images unreadable ({time.time() - start:.0f} s, '
          f'{args.workers} workers)')
    if args.out:
        atomic_write_text(args.out, ''.join(f'{path}\t{why}\n' for path, why in bad))
    return 1 if bad else 0


if __name__ == '__main__':
    sys.exit(main())
