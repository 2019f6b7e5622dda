"""Write the built-in generated data sets (deterministic; seconds).

    python tools/make_synthetic_data.py data/builtin [--num-images 2048] [--size 128]
                                        [--num-labelled 64] [--num-val 128] [--seed 0]
                                        [--num-oracle 2048]

writes, under the root:
  pretrain/                   unlabelled images (pretraining)
  ade/ADEChallengeData2016/   ADE20K layout: images/ and annotations/ {training,validation}
  coco/                       COCO layout: train2017/ val2017/ annotations/instances_*.json
  oracle/ADEChallengeData2016 (--num-oracle N) N labelled scenes of their own, in ADE20K
                              layout: the supervised oracle of the benchmark trains on them
Scenes hold discs, boxes, triangles and rings with textures, occlusion and scale variety.
"""
import argparse
import os.path as osp
import time

from densevit_mm.datasets import write_ade20k_layout, write_coco_layout, write_image_folder
from densevit_mm.datasets.synthetic_layouts import write_marker


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='output folder, e.g. data/builtin')
    parser.add_argument('--num-images', type=int, default=2048, help='unlabelled images')
    parser.add_argument('--num-labelled', type=int, default=64,
                        help='labelled training images per task (few, on purpose)')
    parser.add_argument('--num-val', type=int, default=128, help='validation images per task')
    parser.add_argument('--size', type=int, default=128, help='image side in pixels')
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--num-oracle', type=int, default=0,
                        help='labelled scenes for the supervised oracle (0: none)')
    args = parser.parse_args()
    start = time.time()
    write_image_folder(osp.join(args.root, 'pretrain'), args.num_images, args.size, args.seed)
    write_ade20k_layout(osp.join(args.root, 'ade'), args.num_labelled, args.num_val, args.size,
                        args.seed + 1)
    write_coco_layout(osp.join(args.root, 'coco'), args.num_labelled, args.num_val, args.size,
                      args.seed + 2)
    if args.num_oracle:  # scenes of their own seed: none is pretrained or evaluated on
        write_ade20k_layout(osp.join(args.root, 'oracle'), args.num_oracle, 8, args.size,
                            args.seed + 3)
    # written last: its presence means the whole set is there (tools/run_benchmark.py reuses it)
    write_marker(args.root, layout='all', num_images=args.num_images, size=args.size,
                 seed=args.seed, num_labelled=args.num_labelled, num_val=args.num_val,
                 num_oracle=args.num_oracle)
    print(f'wrote {args.num_images} unlabelled and {args.num_labelled} + {args.num_val} '
          f'labelled {args.size}px scenes per task to {args.root} in {time.time() - start:.1f}s')


if __name__ == '__main__':
    main()
