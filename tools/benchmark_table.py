"""Collect mIoU / AP from mmengine work dirs into Markdown and CSV tables and a plot.

    python tools/benchmark_table.py work_dirs/builtin --out work_dirs/builtin/results

Every work dir below the root that logged validation metrics (mmseg's mIoU, mmdet's
coco/bbox_mAP and coco/segm_mAP) becomes part of a row; runs that fine-tuned the same
pretraining checkpoint share one row, and runs that differ only by seed share a cell, shown
as ``mean ± std (n)``.  The method and its pretraining epochs are read from the config
stored in that checkpoint (lambda 0 = global-only; a segmentation model trained with labels
= the supervised oracle).  With a random-init and an oracle row, a calibration block gives
each column's oracle gap, seed std and their ratio (a column separates backbones at 3 or
more).  Rows on generated data are labelled "built-in"; published numbers of other methods
follow in their own block.
"""
import argparse
import os
import os.path as osp

from densevit_mm.benchmark import collect_rows, load_published, markdown_table, plot, write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='folder holding the work dirs (searched recursively)')
    parser.add_argument('--out', help='output folder (default: <root>/results)')
    args = parser.parse_args()
    out = args.out or osp.join(args.root, 'results')
    rows = collect_rows(args.root)
    if not rows:
        raise SystemExit(f'no work dir under {args.root} logged mIoU or COCO AP: train or '
                         'test a segmentation / detection config first')
    os.makedirs(out, exist_ok=True)
    table = markdown_table(rows, load_published())
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write(table)
    write_csv(rows, load_published(), osp.join(out, 'results.csv'))
    plot(rows, osp.join(out, 'results.png'))
    print(table)
    print(f'wrote {out}/results.md, results.csv, results.png')


if __name__ == '__main__':
    main()
