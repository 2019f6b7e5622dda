"""Write the built-in generated data set (deterministic; seconds).

    python tools/make_synthetic_data.py data/synthetic [--num-images 256] [--size 96] [--seed 0]
writes an unlabelled image folder ``<root>/pretrain/`` for pretraining.
"""
import argparse
import os.path as osp
import time

from densevit_mm.datasets import write_image_folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='output folder, e.g. data/synthetic')
    parser.add_argument('--num-images', type=int, default=256)
    parser.add_argument('--size', type=int, default=96, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    args = parser.parse_args()
    start = time.time()
    write_image_folder(osp.join(args.root, 'pretrain'), args.num_images, args.size, args.seed)
    print(f'wrote {args.num_images} images of {args.size}x{args.size} to '
          f'{osp.join(args.root, "pretrain")} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
