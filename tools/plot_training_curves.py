"""Plot pretraining curves (loss terms, lambda, correspondence accuracy) from mmengine logs.

    python tools/plot_training_curves.py work_dirs/densevit_s [more work dirs] --out curves.png
"""
import argparse
import glob
import json
import os.path as osp

KEYS = ('loss_global', 'loss_dense', 'loss_lambda', 'corr_acc')


def read_scalars(work_dir: str) -> dict:
    """Per-iteration training scalars of the newest run in ``work_dir``."""
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        raise SystemExit(f'no mmengine log (*/vis_data/scalars.json) in {work_dir}')
    series = {key: ([], []) for key in KEYS}
    with open(runs[-1]) as f:
        for line in f:
            entry = json.loads(line)
            for key in KEYS:
                if key in entry:
                    series[key][0].append(entry['step'])
                    series[key][1].append(entry[key])
    return series


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--out', default='training_curves.png')
    args = parser.parse_args()
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    fig, axes = plt.subplots(1, len(KEYS), figsize=(4 * len(KEYS), 3.2))
    for work_dir in args.work_dirs:
        series = read_scalars(work_dir)
        for ax, key in zip(axes, KEYS):
            steps, values = series[key]
            if steps:
                ax.plot(steps, values, label=osp.basename(osp.normpath(work_dir)))
    for ax, key in zip(axes, KEYS):
        ax.set_title(key)
        ax.set_xlabel('iteration')
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
