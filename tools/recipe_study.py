"""Measure changes of the pretraining recipe on the calibrated built-in benchmark.

    python tools/recipe_study.py [--work-dir work_dirs/recipe] [--baseline work_dirs/builtin]
                                 [--variants NAME ...] [--seeds 3] [--jobs 2]

Each variant is the built-in DenseViT pretraining (configs/builtin/densevit-mini_pretrain_
builtin.py) as it was before this study (STUDY_BASE: key-encoder momentum 0.99, MoCo v3's
value) with a few config changes (VARIANTS below); the study led to the built-in recipe's
momentum of 0.999 (docs/builtin_benchmark.md).  tools/run_benchmark.py pretrains it,
runs the main job's transfer protocols from it (--seeds each) and diagnoses it
(correspondence accuracy, RankMe, hub share) in <work-dir>/<variant>; a variant already done
there is not run again.  The table <work-dir>/recipe.md (and .csv) puts every variant beside
the random-init, oracle and global-only rows of a finished main job (--baseline).
"""
import argparse
import csv
import json
import os.path as osp
import subprocess
import sys
import time

from densevit_mm.benchmark import collect_rows
from densevit_mm.benchmark.collect import ORACLE, RANDOM_INIT
from densevit_mm.benchmark.statistics import format_values, mean_std

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))  # the repository: run_benchmark's cwd

GRAYSCALE = 'train_dataloader.dataset.pipeline.1.transforms.0.2.prob'
JITTER = 'train_dataloader.dataset.pipeline.1.transforms.0.1.transforms.0'
# the recipe the study started from; every variant changes it
STUDY_BASE = ['model.momentum=0.01']
# name -> (pretraining --cfg-options on top of STUDY_BASE, run_benchmark arguments)
VARIANTS = {
    'study baseline (momentum 0.99)': ([], []),
    'momentum 0.999 (DenseCL)': (['model.momentum=0.001'], []),
    'lr 3.75e-5 (MoCo v3 rule)': (['optim_wrapper.optimizer.lr=3.75e-5'], []),
    'lr 3e-4': (['optim_wrapper.optimizer.lr=3e-4'], []),
    'queues 1024': (['model.head.loss_global.queue_len=1024',
                     'model.head.loss_dense.queue_len=1024'], []),
    'queues 16384': (['model.head.loss_global.queue_len=16384',
                      'model.head.loss_dense.queue_len=16384'], []),
    'grayscale views': ([f'{GRAYSCALE}=1.0'], []),
    'jitter 0.8/0.8/0.8/0.2': ([f'{JITTER}.brightness=0.8', f'{JITTER}.contrast=0.8',
                                f'{JITTER}.saturation=0.8', f'{JITTER}.hue=0.2'], []),
    'sine-cosine position embedding': (['model.backbone.pos_embed_type=sincos'], []),
    'temperature 0.1': (['model.head.loss_global.temperature=0.1',
                         'model.head.loss_dense.temperature=0.1'], []),
    'temperature 0.5': (['model.head.loss_global.temperature=0.5',
                         'model.head.loss_dense.temperature=0.5'], []),
    'centred matching': (['model.match_centering=True'], []),
    'matching on layer 2 of 4': (['model.match_layer=1', 'model.backbone.out_indices=[1,3]'],
                                 []),
    '32 epochs': ([], ['--epochs', '32']),
    'momentum 0.999 + lr 3e-4': (['model.momentum=0.001', 'optim_wrapper.optimizer.lr=3e-4'],
                                 []),
    'momentum 0.999, 32 epochs': (['model.momentum=0.001'], ['--epochs', '32']),
}


def log(msg: str) -> None:
    print(f'[recipe_study {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def slug(name: str) -> str:
    return ''.join(c if c.isalnum() else '_' for c in name).strip('_')


def summary(work_dir: str, method_prefix: str) -> dict:
    """Columns (seed values) and diagnostics of the row whose method starts with
    ``method_prefix`` in a run_benchmark work dir."""
    rows = [r for r in collect_rows(work_dir) if r.method.startswith(method_prefix)]
    if not rows:
        return {}
    with open(osp.join(work_dir, 'results', 'diagnostics.json')) as f:
        diagnostics = json.load(f)
    # run_benchmark diagnoses random init and the pretrainings, not the oracle
    key = {RANDOM_INIT: 'random init', ORACLE: None, 'DenseViT': 'densevit',
           'Global-only': 'globalonly'}[method_prefix]
    return dict(metrics=rows[0].metrics, diagnostics=diagnostics.get(key, {}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/recipe')
    parser.add_argument('--baseline', default='work_dirs/builtin',
                        help="a finished main job's work dir (random, oracle, global-only)")
    parser.add_argument('--variants', nargs='+', choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument('--seeds', type=int, default=3)
    parser.add_argument('--jobs', type=int, default=2)
    args = parser.parse_args()

    for i, name in enumerate(args.variants):
        work_dir = osp.join(args.work_dir, slug(name))
        if osp.isfile(osp.join(work_dir, 'results', 'diagnostics.json')):
            log(f'variant {i + 1}/{len(args.variants)}: {name}: done before, kept')
            continue
        options, extra = VARIANTS[name]
        log(f'variant {i + 1}/{len(args.variants)}: {name} {" ".join(options + extra)}')
        command = [sys.executable, osp.join(ROOT, 'tools/run_benchmark.py'),
                   '--work-dir', work_dir, '--methods', 'densevit', '--starts', 'densevit',
                   '--seeds', str(args.seeds), '--jobs', str(args.jobs), *extra,
                   '--pretrain-options', *STUDY_BASE, *options]
        subprocess.run(command, check=True, cwd=ROOT)

    base = [(label, summary(args.baseline, prefix)) for label, prefix in (
        ('random init', RANDOM_INIT), ('supervised oracle', ORACLE),
        ('global-only (main job)', 'Global-only'))]
    runs = base + [(name, summary(osp.join(args.work_dir, slug(name)), 'DenseViT'))
                   for name in args.variants]
    runs = [(name, s) for name, s in runs if s]
    columns = list(dict.fromkeys(c for _, s in runs for c in s['metrics']))
    diag = ('correspondence_accuracy', 'rankme', 'hub_share')
    lines = ['| pretraining | ' + ' | '.join(columns) + ' | correspondence accuracy | RankMe '
             '| hub share | changes |', '|---|' + '---|' * (len(columns) + 4)]
    for name, s in runs:
        changes = ' '.join(VARIANTS.get(name, ([], []))[0] + VARIANTS.get(name, ([], []))[1])
        d = s['diagnostics']
        lines.append(f'| {name} | ' + ' | '.join(format_values(s['metrics'].get(c, []))
                                                  for c in columns)
                     + ''.join(f' | {d[k]:{spec}}' if k in d else ' | -'
                               for k, spec in zip(diag, ('.3f', '.1f', '.3f')))
                     + f' | {changes} |')
    table = '\n'.join(lines) + '\n'
    with open(osp.join(args.work_dir, 'recipe.md'), 'w') as f:
        f.write(table)
    with open(osp.join(args.work_dir, 'recipe.csv'), 'w', newline='') as f:
        writer = csv.writer(f)
        writer.writerow(['pretraining', *[f'{c} {s}' for c in columns for s in ('mean', 'std')],
                         *diag])
        for name, s in runs:
            writer.writerow([name, *[v for c in columns for v in mean_std(s['metrics'].get(c, []))],
                             *[s['diagnostics'].get(k, '') for k in diag]])
    print(table)
    log(f'wrote {args.work_dir}/recipe.md and recipe.csv')


if __name__ == '__main__':
    main()
