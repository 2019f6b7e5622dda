"""Collect mIoU / AP from mmengine work dirs into Markdown and CSV tables and a plot.

    python tools/benchmark_table.py work_dirs/builtin --out work_dirs/builtin/results

Every work dir below the root that logged validation metrics (mmseg's mIoU, mmdet's
coco/bbox_mAP and coco/segm_mAP) becomes part of a row; runs that fine-tuned the same
pretraining checkpoint share one row, and runs that differ only by seed share a cell, shown
as ``mean ± std (n)`` (a single run: ``mean (1)``).  The method and its pretraining epochs
are read from the config stored in that checkpoint (lambda 0 = global-only; a segmentation
model trained with labels = the supervised oracle).  With a random-init and an oracle row, a
calibration block gives each column's oracle gap, seed std and their ratio (a column
separates backbones at 3 or more).  Rows on generated data are labelled "built-in";
published numbers of other methods follow in their own block.  A tree of cut runs is read
too: a log line that is no JSON is skipped with a warning naming the file and line, and
every work dir that gives no row is listed with the reason (here and in results.md).
"""
import argparse
import os
import os.path as osp
import sys

from densevit_mm.benchmark import collect, load_published, markdown_table, plot, write_csv


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('root', help='folder holding the work dirs (searched recursively)')
    parser.add_argument('--out', help='output folder (default: <root>/results)')
    args = parser.parse_args()
    out = args.out or osp.join(args.root, 'results')
    found = collect(args.root)
    for line in found.skipped:
        print(f'warning: {line}', file=sys.stderr)
    rows = found.rows
    if not rows:
        for work_dir, why in found.left_out:
            print(f'left out {work_dir}: {why}', file=sys.stderr)
        raise SystemExit(f'no work dir under {args.root} logged mIoU or COCO AP: train or '
                         'test a segmentation / detection config first')
    os.makedirs(out, exist_ok=True)
    table = markdown_table(rows, load_published(), found.left_out, found.skipped)
    with open(osp.join(out, 'results.md'), 'w') as f:
        f.write(table)
    write_csv(rows, load_published(), osp.join(out, 'results.csv'))
    plot(rows, osp.join(out, 'results.png'))
    print(table)
    print(f'wrote {out}/results.md, results.csv, results.png')


if __name__ == '__main__':
    main()
