"""The whole DenseViT pipeline on built-in generated data, with progress and ETA.

    python tools/run_benchmark.py [--work-dir work_dirs/builtin] [--data-root data/builtin]
                                  [--quick]

Stages: generate the data (deterministic), pretrain DenseViT (lambda 0.5) and the global-only
baseline (lambda 0), then, from random init and from both checkpoints: fine-tune on segmentation
(Semantic FPN), train a linear segmentation head on the frozen backbone, and fine-tune on
detection (Mask R-CNN); finally write the result table, the training curves and the
correspondence pictures to <work-dir>/results.  Each stage runs tools/train.py in its own
process; its full log is in the stage's work dir, and its progress lines are shown here.
``--quick`` shrinks everything to a smoke test of the pipeline (its numbers mean nothing).
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import List

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
PRETRAIN = {
    'densevit': 'configs/builtin/densevit-mini_pretrain_builtin.py',
    'globalonly': 'configs/builtin/globalonly-mini_pretrain_builtin.py',
}
SEG = 'configs/builtin/fpn_densevit-mini_builtin-seg.py'
SEG_LINEAR = 'configs/builtin/linear_densevit-mini_builtin-seg.py'
DET = 'configs/builtin/mask-rcnn_densevit-mini_builtin-det.py'
# (pretraining epochs, seg iterations, det iterations, pretrain images, labelled train/val)
FULL = dict(epochs=8, seg_iters=300, det_iters=120, images=2048, labelled=(64, 128))
QUICK = dict(epochs=1, seg_iters=2, det_iters=2, images=32, labelled=(8, 4))
# seconds a stage takes on 2 CPU cores, until one of its kind has been measured
ESTIMATE = dict(data=20, pretrain=110, seg=40, seglinear=18, det=135, report=20)


@dataclass
class Stage:
    name: str
    kind: str
    command: List[str]


def log(msg: str) -> None:
    print(f'[run_benchmark {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def fmt(seconds: float) -> str:
    return time.strftime('%M:%S' if seconds < 3600 else '%H:%M:%S', time.gmtime(seconds))


def train_stage(name, kind, config, work_dir, options) -> Stage:
    command = [sys.executable, osp.join(ROOT, 'tools/train.py'), config,
               '--work-dir', work_dir]
    if options:
        command += ['--cfg-options', *options]
    return Stage(name, kind, command)


def plan(args, size) -> List[Stage]:
    w, d = args.work_dir, args.data_root
    stages = [Stage('generate built-in data', 'data', [
        sys.executable, osp.join(ROOT, 'tools/make_synthetic_data.py'), d,
        '--num-images', str(size['images']), '--size', '128',
        '--num-labelled', str(size['labelled'][0]), '--num-val', str(size['labelled'][1])])]
    checkpoints = {'random': None}
    for method, config in PRETRAIN.items():
        work_dir = osp.join(w, f'pretrain_{method}')
        options = [f'train_dataloader.dataset.data_root={d}',
                   f'train_cfg.max_epochs={size["epochs"]}',
                   f'default_hooks.checkpoint.interval={size["epochs"]}']
        if size['epochs'] > 1:  # the cosine phase (scheduler 1, after the warm-up epoch) spans it
            options += [f'param_scheduler.1.T_max={size["epochs"] - 1}',
                        f'param_scheduler.1.end={size["epochs"]}']
        if args.quick:
            options += ['train_dataloader.batch_size=8']
        stages.append(train_stage(f'pretrain {method}', 'pretrain', config, work_dir, options))
        checkpoints[method] = osp.join(work_dir, f'epoch_{size["epochs"]}.pth')
    ade = osp.join(d, 'ade', 'ADEChallengeData2016')
    for task, config, iters, root in (
            ('seg', SEG, size['seg_iters'], ade),
            ('seglinear', SEG_LINEAR, size['seg_iters'], ade),
            ('det', DET, size['det_iters'], osp.join(d, 'coco') + '/')):
        for method, checkpoint in checkpoints.items():
            options = [f'train_cfg.max_iters={iters}', f'train_cfg.val_interval={iters}',
                       f'default_hooks.checkpoint.interval={iters}',
                       f'train_dataloader.dataset.data_root={root}',
                       f'val_dataloader.dataset.data_root={root}',
                       f'test_dataloader.dataset.data_root={root}',
                       'model.backbone.init_cfg=None' if checkpoint is None else
                       f'model.backbone.init_cfg.checkpoint={checkpoint}']
            if task == 'det':
                ann = osp.join(root, 'annotations/instances_val2017.json')
                options += [f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}']
            stages.append(train_stage(f'{task} {method}', task, config,
                                      osp.join(w, f'{task}_{method}'), options))
    return stages


def run_stage(stage: Stage, index: int, total: int, started: float, remaining: float) -> None:
    log(f'stage {index}/{total}: {stage.name} (elapsed {fmt(time.time() - started)}, '
        f'ETA of the whole job ~{fmt(remaining)})')
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''))
    proc = subprocess.Popen(stage.command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, cwd=ROOT)
    tail = []
    for line in proc.stdout:
        tail = (tail + [line])[-40:]
        # mmengine's progress lines carry the stage's own ETA
        if 'Iter(' in line or 'Epoch(' in line or line.startswith('wrote'):
            print('    ' + line.rstrip()[line.find('- mmengine - INFO - ') + 20:]
                  if '- mmengine - INFO - ' in line else '    ' + line.rstrip(), flush=True)
    if proc.wait() != 0:
        sys.stdout.write(''.join(tail))
        raise SystemExit(f'stage "{stage.name}" failed (exit {proc.returncode}); '
                         f'command: {" ".join(stage.command)}')


def report(args, size) -> None:
    """Table, curves and correspondence pictures into <work-dir>/results."""
    results = osp.join(args.work_dir, 'results')
    os.makedirs(results, exist_ok=True)
    py = [sys.executable]
    subprocess.run(py + [osp.join(ROOT, 'tools/plot_training_curves.py'),
                         *[osp.join(args.work_dir, f'pretrain_{m}') for m in PRETRAIN],
                         '--out', osp.join(results, 'training_curves.png')], check=True, cwd=ROOT)
    diagnostics = {}
    images = osp.join(args.data_root, 'pretrain')
    runs = [('random init', PRETRAIN['densevit'], None)] + [
        (m, config, osp.join(args.work_dir, f'pretrain_{m}', f'epoch_{size["epochs"]}.pth'))
        for m, config in PRETRAIN.items()]
    for name, config, checkpoint in runs:
        out = osp.join(results, f'correspondence_{name.replace(" ", "_")}.png')
        command = py + [osp.join(ROOT, 'tools/visualize_correspondence.py'),
                        config, images, '--out', out, '--num-images', '64']
        if checkpoint:
            command += ['--checkpoint', checkpoint]
        text = subprocess.run(command, check=True, capture_output=True, text=True,
                              cwd=ROOT).stdout
        diagnostics[name] = dict(
            correspondence_accuracy=float(re.search(r'accuracy .* images: ([0-9.]+)', text)[1]),
            rankme=float(re.search(r'RankMe .* images: ([0-9.]+)', text)[1]))
    with open(osp.join(results, 'diagnostics.json'), 'w') as f:
        json.dump(diagnostics, f, indent=2)
    subprocess.run(py + [osp.join(ROOT, 'tools/benchmark_table.py'), args.work_dir,
                         '--out', results], check=True, cwd=ROOT)
    print('Diagnostics over 64 view pairs: correspondence accuracy (argmax match within one '
          'patch of the true one, 6x6 grid) and RankMe of the patch tokens (of at most the width):')
    for name, value in diagnostics.items():
        print(f'  {name:12s} {value["correspondence_accuracy"]:.3f}  {value["rankme"]:6.1f}')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--work-dir', default='work_dirs/builtin')
    parser.add_argument('--data-root', default='data/builtin')
    parser.add_argument('--quick', action='store_true',
                        help='tiny sizes: checks the pipeline in about two minutes')
    parser.add_argument('--epochs', type=int,
                        help=f'pretraining epochs (default {FULL["epochs"]}; each adds about '
                             f'14 s per pretraining on 2 CPU cores)')
    args = parser.parse_args()
    args.work_dir, args.data_root = osp.abspath(args.work_dir), osp.abspath(args.data_root)
    size = dict(QUICK if args.quick else FULL)
    if args.epochs is not None:
        if args.epochs < 1:
            parser.error(f'--epochs must be positive, got {args.epochs}')
        size['epochs'] = args.epochs
        ESTIMATE['pretrain'] *= args.epochs / FULL['epochs']
    stages = plan(args, size)
    started = time.time()
    measured = {}  # kind -> seconds of the stages of that kind done so far

    def expected(kind):
        done = measured.get(kind)
        return sum(done) / len(done) if done else ESTIMATE[kind]

    for i, stage in enumerate(stages):
        remaining = sum(expected(s.kind) for s in stages[i:]) + expected('report')
        stage_start = time.time()
        run_stage(stage, i + 1, len(stages) + 1, started, remaining)
        measured.setdefault(stage.kind, []).append(time.time() - stage_start)
    log(f'stage {len(stages) + 1}/{len(stages) + 1}: results (elapsed '
        f'{fmt(time.time() - started)})')
    report(args, size)
    log(f'done in {fmt(time.time() - started)}; results in {args.work_dir}/results')


if __name__ == '__main__':
    main()
