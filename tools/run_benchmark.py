"""The whole DenseViT pipeline on built-in generated data, with progress and ETA.

    python tools/run_benchmark.py [--work-dir work_dirs/builtin] [--data-root data/builtin]
        [--quick] [--epochs 8] [--seeds 3] [--protocols linear fcos] [--jobs 2]
        [--methods mocov3 densevit mae | all] [--pretrain-options key=value ...]

Stages: generate the data (deterministic; with a labelled split of its own for the oracle),
pretrain DenseViT (lambda 0.5) and its peers MoCo v3 and MAE (``--methods all`` adds DINO, iBOT
and the global-only baseline), train the supervised oracle (the segmentation model on the
oracle's labelled scenes, whose backbone is what a good pretraining could reach), then run
every transfer protocol from random init, the oracle and each pretraining, once per seed,
and the retrieval column, ``--jobs`` at a time; finally write the table
(mean ± std over seeds, and the calibration: each column's oracle gap against its seed
spread), the training curves, the correspondence pictures and diagnostics to
<work-dir>/results.  Each training stage runs ``python -m densevit_mm.train`` in its own
process (tools/benchmark_stages.py runs the stages); its log is in <work-dir>/logs.  ``--quick`` shrinks everything to a smoke test (its numbers mean nothing).

Stopped (Ctrl-C, SIGTERM: the stages save a checkpoint and stop, exit 130 / 143), or failed,
the same command continues: the stages done with the same arguments are reused (their
records are in <work-dir>/stages), a stopped training run resumes from its checkpoint.

Protocols (PROTOCOLS below): ``linear`` (a linear probe on the frozen last layer) and
``fcos`` (box AP of an FCOS head on the frozen backbone, the cheapest detection design that
separates the oracle from random init) by default, and the k-NN retrieval column of every
start (no training); ``fpnfrozen`` (Semantic FPN on the frozen backbone) and ``retinanet``
pass calibration too but are left out of the main job's 20 minutes; ``finetune`` (Semantic
FPN, whole backbone fine-tuned), ``det`` (Mask R-CNN fine-tuned) and ``maskrcnnfrozen`` do not
separate at this budget (docs/builtin_benchmark.md).
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from typing import Optional, Sequence

from benchmark_stages import ESTIMATE, ROOT, Stage, StageRunner, fmt, log, train_stage

from densevit_mm.datasets import BUILTIN_MARKER

# pretraining epochs and images, labelled train/val images per task, oracle images and
# iterations, transfer iterations (None: the protocol's own)
FULL = dict(epochs=8, images=2048, labelled=(64, 128), oracle=(2048, 300), iters=None)
QUICK = dict(epochs=1, images=32, labelled=(8, 4), oracle=(16, 2), iters=2)
# configs relative to the repository, where the stages run
# pretrainings, the longest first (stages start in this order, two at a time); the main job
# runs DEFAULT_METHODS, --methods all every one
PRETRAIN_CONFIGS = {
    'mocov3': 'configs/builtin/mocov3-mini_pretrain_builtin.py',
    'densevit': 'configs/builtin/densevit-mini_pretrain_builtin.py',
    'ibot': 'configs/builtin/ibot-mini_pretrain_builtin.py',
    'dino': 'configs/builtin/dino-mini_pretrain_builtin.py',
    'globalonly': 'configs/builtin/globalonly-mini_pretrain_builtin.py',
    'mae': 'configs/builtin/mae-mini_pretrain_builtin.py',
}
DEFAULT_METHODS = ('mocov3', 'densevit', 'mae')
# the models whose own matching the diagnostics use; the others' backbones are matched by
# DenseViT's rule (tools/visualize_correspondence.py --backbone-checkpoint)
OWN_MATCHING = ('densevit', 'globalonly')
ORACLE_CONFIG = 'configs/builtin/fpn_densevit-mini_builtin-seg.py'
# the dense retrieval column (tools/dense_retrieval.py): the linear probe's config gives the
# backbone and the data; 3 augmented passes (docs/builtin_benchmark.md: as separating as 10)
RETRIEVAL_CONFIG = 'configs/builtin/linear_densevit-mini_builtin-seg.py'
RETRIEVAL_OPTIONS = ['--passes', '3', '--k', '30', '--temperature', '0.02', '--layer', '-1',
                     '--input-size', '128']
# transfer protocols: config, iterations, data set, and whether the main job runs them
PROTOCOLS = {
    'linear': dict(config='configs/builtin/linear_densevit-mini_builtin-seg.py', iters=200,
                   data='ade', default=True),
    'fpnfrozen': dict(config='configs/builtin/fpn-frozen_densevit-mini_builtin-seg.py',
                      iters=100, data='ade', default=False),
    # box AP on the frozen backbone; iterations as in the config (its lr step depends on them)
    'fcos': dict(config='configs/builtin/fcos-frozen_densevit-mini_builtin-det.py', iters=40,
                 data='coco', default=True),
    'retinanet': dict(config='configs/builtin/retinanet-frozen_densevit-mini_builtin-det.py',
                      iters=60, data='coco', default=False),
    'maskrcnnfrozen': dict(config='configs/builtin/mask-rcnn-frozen_densevit-mini_builtin-det.py',
                           iters=60, data='coco', default=False),
    'finetune': dict(config='configs/builtin/fpn_densevit-mini_builtin-seg.py', iters=300,
                     data='ade', default=False),
    'det': dict(config='configs/builtin/mask-rcnn_densevit-mini_builtin-det.py', iters=120,
                data='coco', default=False),
}


def transfer_stage(protocol: str, start: str, checkpoint: Optional[str], seed: int,
                   data_root: str, work_root: str, iters: Optional[int] = None) -> Stage:
    """One seed of one transfer protocol from one start (random init when no checkpoint)."""
    spec = PROTOCOLS[protocol]
    iters = iters or spec['iters']
    root = (osp.join(data_root, 'ade', 'ADEChallengeData2016') if spec['data'] == 'ade' else
            osp.join(data_root, 'coco') + '/')
    options = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
               f'default_hooks.checkpoint.interval={iters}', f'randomness.seed={seed}',
               f'train_dataloader.dataset.data_root={root}',
               f'val_dataloader.dataset.data_root={root}',
               f'test_dataloader.dataset.data_root={root}',
               'model.backbone.init_cfg=None' if checkpoint is None else
               f'model.backbone.init_cfg.checkpoint={checkpoint}']
    if spec['data'] == 'coco':
        ann = osp.join(root, 'annotations/instances_val2017.json')
        options += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
    work_dir = osp.join(work_root, f'{protocol}_{start}_seed{seed}')
    return train_stage(f'{protocol} {start} seed {seed}', protocol, spec['config'], work_dir,
                       options, inputs=[checkpoint] if checkpoint else [],
                       outputs=[osp.join(work_dir, f'iter_{iters}.pth')])


def diagnose(config: str, checkpoint: Optional[str], images: str, picture: str,
             num_images: int = 64, cfg_options: Sequence[str] = (),
             own_model: bool = True) -> dict:
    """Correspondence accuracy, RankMe and hub share of a backbone (and the picture of its
    matches), from tools/visualize_correspondence.py; ``cfg_options`` are the overrides the
    checkpoint was pretrained with (its queue lengths, its matching); ``own_model``: the
    checkpoint is ``config``'s pretraining, else only its backbone is read."""
    command = [sys.executable, osp.join(ROOT, 'tools/visualize_correspondence.py'), config,
               images, '--out', picture, '--num-images', str(num_images)]
    if checkpoint:
        command += ['--checkpoint' if own_model else '--backbone-checkpoint', checkpoint]
    if cfg_options:
        command += ['--cfg-options', *cfg_options]
    proc = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if proc.returncode:
        raise SystemExit(f'{" ".join(command)} failed (exit {proc.returncode}):\n'
                         f'{proc.stderr[-3000:]}')
    text = proc.stdout
    return dict(
        correspondence_accuracy=float(re.search(r'accuracy .* images: ([0-9.]+)', text)[1]),
        rankme=float(re.search(r'RankMe .* images: ([0-9.]+)', text)[1]),
        hub_share=float(re.search(r'hub share .* images: ([0-9.]+)', text)[1]))



def _data_is_there(data_root: str, info: dict) -> bool:
    """Whether make_synthetic_data.py finished writing exactly this set there before."""
    try:
        with open(osp.join(data_root, BUILTIN_MARKER)) as f:
            marker = json.load(f)
    except (OSError, ValueError):
        return False
    return all(marker.get(k) == v for k, v in info.items())


def plan(args, size) -> dict:
    """The stages, in groups that run one after the other."""
    w, d = args.work_dir, args.data_root
    info = dict(num_images=size['images'], size=128, seed=0, num_labelled=size['labelled'][0],
                num_val=size['labelled'][1], num_oracle=size['oracle'][0])
    groups = dict(data=[] if _data_is_there(d, info) else [Stage(
        'generate built-in data', 'data', [
            sys.executable, osp.join(ROOT, 'tools/make_synthetic_data.py'), d,
            *[f'--{k.replace("_", "-")}={v}' for k, v in info.items()]],
        outputs=[osp.join(d, BUILTIN_MARKER)])])
    starts = {'random': None}
    groups['pretrain'] = []
    for method in args.methods:
        config = PRETRAIN_CONFIGS[method]
        work_dir = osp.join(w, f'pretrain_{method}')
        options = [f'train_dataloader.dataset.data_root={d}',
                   f'train_cfg.max_epochs={size["epochs"]}',
                   f'default_hooks.checkpoint.interval={size["epochs"]}']
        if size['epochs'] > 1:  # the cosine phase (scheduler 1, after the warm-up epoch) spans it
            options += [f'param_scheduler.1.T_max={size["epochs"] - 1}',
                        f'param_scheduler.1.end={size["epochs"]}']
        if args.quick:
            options += ['train_dataloader.batch_size=8']
        if method in OWN_MATCHING:  # DenseViT's recipe changes; the peers keep theirs
            options += args.pretrain_options or []
        starts[method] = osp.join(work_dir, f'epoch_{size["epochs"]}.pth')
        groups['pretrain'].append(train_stage(f'pretrain {method}', 'pretrain', config,
                                              work_dir, options, outputs=[starts[method]]))
    images, iters = size['oracle']
    oracle_root = osp.join(d, 'oracle', 'ADEChallengeData2016')
    starts['oracle'] = osp.join(w, 'oracle', f'iter_{iters}.pth')
    # not validated: only its backbone counts, through the transfer protocols; it runs beside
    # the pretrainings (after the longest has started)
    groups['pretrain'] += [] if 'oracle' not in args.starts else [train_stage(
        'supervised oracle', 'oracle', ORACLE_CONFIG, osp.join(w, 'oracle'), [
            'model.backbone.init_cfg=None', f'train_cfg.max_iters={iters}',
            f'default_hooks.checkpoint.interval={iters}', 'randomness.seed=0',
            f'train_dataloader.dataset.data_root={oracle_root}'], validate=False,
        outputs=[starts['oracle']])]
    groups['transfer'] = [
        transfer_stage(protocol, start, starts[start], seed, d, w, size['iters'])
        for protocol in args.protocols for start in args.starts
        for seed in range(args.seeds)]
    groups['retrieval'] = [retrieval_stage(start, starts[start], args.seeds, d, w)
                           for start in args.starts]
    return groups


def retrieval_stage(start: str, checkpoint: Optional[str], seeds: int, data_root: str,
                    work_root: str) -> Stage:
    """The k-NN retrieval column of one start, every bank seed in one process."""
    out = osp.join(work_root, f'retrieval_{start}', 'dense_retrieval.json')
    command = [sys.executable, osp.join(ROOT, 'tools/dense_retrieval.py'), RETRIEVAL_CONFIG,
               '--data-root', osp.join(data_root, 'ade', 'ADEChallengeData2016'),
               '--seeds', *map(str, range(seeds)), *RETRIEVAL_OPTIONS, '--out', out]
    if checkpoint:
        command += ['--checkpoint', checkpoint]
    return Stage(f'retrieval {start}', 'retrieval', command,
                 inputs=[checkpoint] if checkpoint else [], outputs=[out])


def report(args, size) -> None:
    """Table, curves, correspondence pictures and diagnostics into <work-dir>/results."""
    results = osp.join(args.work_dir, 'results')
    os.makedirs(results, exist_ok=True)
    py = [sys.executable]
    if args.methods:
        subprocess.run(py + [osp.join(ROOT, 'tools/plot_training_curves.py'),
                             *[osp.join(args.work_dir, f'pretrain_{m}') for m in args.methods],
                             '--out', osp.join(results, 'training_curves.png')],
                       check=True, cwd=ROOT)
    images = osp.join(args.data_root, 'pretrain')
    runs = [('random init', None, None)] * ('random' in args.starts) + [
        (m, m, osp.join(args.work_dir, f'pretrain_{m}', f'epoch_{size["epochs"]}.pth'))
        for m in args.methods]
    # DenseViT's models as pretrained (their queues, their matching); the other backbones
    # matched by DenseViT's rule; the same views for every run
    model_options = [o for o in args.pretrain_options or () if o.startswith('model.')]
    diagnostics = {name: diagnose(
        PRETRAIN_CONFIGS[method if method in OWN_MATCHING else 'densevit'], checkpoint, images,
        osp.join(results, f'correspondence_{name.replace(" ", "_")}.png'),
        cfg_options=model_options if method in OWN_MATCHING else (),
        own_model=method in OWN_MATCHING)
        for name, method, checkpoint in runs}
    with open(osp.join(results, 'diagnostics.json'), 'w') as f:
        json.dump(diagnostics, f, indent=2)
    subprocess.run(py + [osp.join(ROOT, 'tools/benchmark_table.py'), args.work_dir,
                         '--out', results], check=True, cwd=ROOT)
    print('Diagnostics over 64 view pairs (6x6 patch grid): correspondence accuracy (argmax '
          'match within one patch of the true one), RankMe of the patch tokens (of at most the '
          'width), hub share (a pair\'s matches going to its most-chosen key patch):')
    for name, value in diagnostics.items():
        print(f'  {name:12s} {value["correspondence_accuracy"]:.3f}  {value["rankme"]:6.1f}  '
              f'{value["hub_share"]:.3f}')


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """The command line, with ``--methods`` expanded and ordered (longest pretraining first)
    and ``--starts`` defaulting to random, oracle and those methods."""
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/builtin')
    parser.add_argument('--data-root', default='data/builtin')
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes: checks the pipeline in a few minutes')
    parser.add_argument('--epochs', type=int,
                        help=f'pretraining epochs (default {FULL["epochs"]}; each adds about '
                             f'{ESTIMATE["pretrain"] / FULL["epochs"]:.0f} s to a pretraining, '
                             'two of them running at a time on 2 CPU cores)')
    parser.add_argument('--seeds', type=int, default=3, help='seeds per transfer run')
    parser.add_argument('--protocols', nargs='+', choices=sorted(PROTOCOLS),
                        default=[p for p, spec in PROTOCOLS.items() if spec['default']],
                        help='transfer protocols (default: the ones that pass calibration)')
    parser.add_argument('--jobs', type=int, default=2,
                        help='transfer runs at a time, the cores shared among them (default 2)')
    parser.add_argument('--pretrain-options', nargs='+', metavar='KEY=VALUE',
                        help='--cfg-options for DenseViT\'s pretrainings (densevit, '
                        'globalonly: a recipe change); the peers keep their recipes')
    parser.add_argument('--methods', nargs='*', choices=sorted(PRETRAIN_CONFIGS) + ['all'],
                        default=list(DEFAULT_METHODS),
                        help=f'pretrainings to run (default: {" ".join(DEFAULT_METHODS)}; '
                        f'all: {" ".join(PRETRAIN_CONFIGS)})')
    parser.add_argument('--starts', nargs='+', help='backbones the transfer protocols start '
                        'from (default: random, oracle and the pretrained --methods)')
    args = parser.parse_args(argv)
    if 'all' in args.methods:
        args.methods = list(PRETRAIN_CONFIGS)
    # in PRETRAIN_CONFIGS' order: the longest pretraining starts first
    args.methods = [m for m in PRETRAIN_CONFIGS if m in args.methods]
    if args.starts is None:
        args.starts = ['random', 'oracle'] + args.methods
    unknown = set(args.starts) - {'random', 'oracle', *args.methods}
    if unknown:
        parser.error(f'--starts {sorted(unknown)}: neither random, oracle nor a --methods one')
    args.work_dir, args.data_root = osp.abspath(args.work_dir), osp.abspath(args.data_root)
    if args.seeds < 1 or args.jobs < 1:
        parser.error('--seeds and --jobs must be positive')
    if args.epochs is not None and args.epochs < 1:
        parser.error(f'--epochs must be positive, got {args.epochs}')
    return args


def main() -> None:
    args = parse_args()
    size = dict(QUICK if args.quick else FULL)
    if args.epochs is not None:
        size['epochs'] = args.epochs
        ESTIMATE['pretrain'] *= args.epochs / FULL['epochs']
    groups = plan(args, size)
    stages = [stage for group in groups.values() for stage in group]
    results = osp.join(args.work_dir, 'results')
    # its command: what it depends on besides the stages' outputs (--jobs does not count)
    summary = Stage('results', 'report', ['report', *[
        f'{k}={v}' for k, v in sorted(vars(args).items()) if k != 'jobs']],
        inputs=[path for stage in stages for path in stage.outputs],
        outputs=[osp.join(results, name) for name in ('results.md', 'diagnostics.json')])
    runner = StageRunner(len(stages) + 1, osp.join(args.work_dir, 'logs'), jobs=args.jobs,
                         record_dir=osp.join(args.work_dir, 'stages'))
    to_run = {stage.name for stage in runner.to_run(stages + [summary])}
    parallel = dict(data=False, pretrain=True, transfer=True, retrieval=True)
    names = list(groups)
    with runner.handle_signals():
        for i, name in enumerate(names):
            later = [(s.kind, parallel[g]) for g in names[i + 1:] for s in groups[g]
                     if s.name in to_run] + [('report', False)] * (summary.name in to_run)
            runner.run(groups[name], parallel[name], later)
        runner.run_here(summary, lambda: report(args, size))
    log(f'done in {fmt(time.time() - runner.started)}; results in {results}')


if __name__ == '__main__':
    main()
