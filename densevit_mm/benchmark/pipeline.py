"""The stages of the built-in benchmark (tools/run_benchmark.py) and of the recipe study
(tools/recipe_study.py): child processes of tools/train.py and friends, run one or several
at a time, with the elapsed time and an ETA of the whole job."""
import json
import os
import os.path as osp
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

ROOT = osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__))))
PRETRAIN_CONFIGS = {
    'densevit': 'configs/builtin/densevit-mini_pretrain_builtin.py',
    'globalonly': 'configs/builtin/globalonly-mini_pretrain_builtin.py',
}
ORACLE_CONFIG = 'configs/builtin/fpn_densevit-mini_builtin-seg.py'
# transfer protocols: config, iterations, data set, and whether the main job runs them
PROTOCOLS = {
    'linear': dict(config='configs/builtin/linear_densevit-mini_builtin-seg.py', iters=200,
                   data='ade', default=True),
    'fpnfrozen': dict(config='configs/builtin/fpn-frozen_densevit-mini_builtin-seg.py',
                      iters=100, data='ade', default=True),
    'finetune': dict(config='configs/builtin/fpn_densevit-mini_builtin-seg.py', iters=300,
                     data='ade', default=False),
    'det': dict(config='configs/builtin/mask-rcnn_densevit-mini_builtin-det.py', iters=120,
                data='coco', default=False),
}
# seconds a stage of each kind takes on 2 CPU cores (two at a time for the pretrainings and
# the transfer runs), until one has been measured
ESTIMATE = dict(data=45, pretrain=250, oracle=60, linear=25, fpnfrozen=35, finetune=90,
                det=300, report=40)


@dataclass
class Stage:
    name: str
    kind: str
    command: List[str]


def log(msg: str) -> None:
    print(f'[run_benchmark {time.strftime("%H:%M:%S")}] {msg}', flush=True)


def fmt(seconds: float) -> str:
    return time.strftime('%M:%S' if seconds < 3600 else '%H:%M:%S', time.gmtime(seconds))


def train_stage(name: str, kind: str, config: str, work_dir: str, options: List[str],
                validate: bool = True) -> Stage:
    command = [sys.executable, osp.join(ROOT, 'tools/train.py'), config, '--work-dir', work_dir]
    if not validate:
        command.append('--no-validate')
    if options:
        command += ['--cfg-options', *options]
    return Stage(name, kind, command)


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
    return train_stage(f'{protocol} {start} seed {seed}', protocol, spec['config'],
                       osp.join(work_root, f'{protocol}_{start}_seed{seed}'), options)


_RESULT = re.compile(r'(mIoU|coco/bbox_mAP): ([0-9.]+)')


class StageRunner:
    """Runs stages, ``jobs`` at a time, each child with ``cores // jobs`` threads and its
    output in ``log_dir/<stage>.log``, and keeps the measured durations for the ETA."""

    def __init__(self, total_stages: int, log_dir: str, jobs: int = 1) -> None:
        self.total, self.log_dir, self.jobs = total_stages, log_dir, jobs
        self.started = time.time()
        self.done = 0
        self.measured: Dict[str, List[float]] = {}
        os.makedirs(log_dir, exist_ok=True)

    def expected(self, kind: str) -> float:
        done = self.measured.get(kind)
        return sum(done) / len(done) if done else ESTIMATE[kind]

    def eta(self, pending: List[Stage], jobs: int, later: List[Tuple[str, bool]]) -> float:
        """Seconds left: the pending stages, ``jobs`` at a time, and the stages still to
        come after them, ``(kind, run in parallel)``."""
        return (sum(self.expected(s.kind) for s in pending) / jobs
                + sum(self.expected(k) / (self.jobs if p else 1) for k, p in later))

    def run(self, stages: List[Stage], parallel: bool = False,
            later: List[Tuple[str, bool]] = ()) -> None:
        """Run ``stages`` (``parallel``: ``jobs`` at a time); ``later``: the stages still to
        come after these, ``(kind, run in parallel)``, for the ETA."""
        jobs = min(self.jobs, len(stages)) if parallel else 1
        threads = max(1, (os.cpu_count() or 1) // max(1, jobs))
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get('PYTHONPATH', ''),
                   OMP_NUM_THREADS=str(threads))
        queue, running = list(stages), []
        while queue or running:
            while queue and len(running) < jobs:
                stage = queue.pop(0)
                self.done += 1
                log(f'stage {self.done}/{self.total}: {stage.name} (elapsed '
                    f'{fmt(time.time() - self.started)}, ETA of the whole job '
                    f'~{fmt(self.eta([stage] + queue, jobs, list(later)))})')
                path = osp.join(self.log_dir, re.sub(r'\W+', '_', stage.name) + '.log')
                with open(path, 'w') as out:
                    proc = subprocess.Popen(stage.command, stdout=out, stderr=subprocess.STDOUT,
                                            text=True, env=env, cwd=ROOT)
                running.append(dict(stage=stage, proc=proc, start=time.time(), path=path,
                                    shown=0))
            if jobs == 1:  # one child: show its progress lines (mmengine's ETA in them)
                self._show_progress(running[0])
            for entry in [e for e in running if e['proc'].poll() is not None]:
                if jobs == 1:
                    self._show_progress(entry)
                self._finish(entry)
                running.remove(entry)
            time.sleep(0.2)

    @staticmethod
    def _show_progress(entry: dict) -> None:
        with open(entry['path']) as f:
            f.seek(entry['shown'])
            text = f.read()
        complete = text[:text.rfind('\n') + 1]  # whole lines only
        entry['shown'] += len(complete.encode())
        for line in complete.splitlines():
            if 'Iter(' in line or 'Epoch(' in line or line.startswith('wrote'):
                print('    ' + (line[line.find(' - INFO - ') + 10:] if ' - INFO - ' in line
                               else line), flush=True)

    def _finish(self, entry: dict) -> None:
        stage, proc = entry['stage'], entry['proc']
        with open(entry['path']) as f:
            tail = f.readlines()[-40:]
        if proc.returncode != 0:
            sys.stdout.write(''.join(tail))
            raise SystemExit(f'stage "{stage.name}" failed (exit {proc.returncode}); log: '
                             f'{entry["path"]}; command: {" ".join(stage.command)}')
        seconds = time.time() - entry['start']
        self.measured.setdefault(stage.kind, []).append(seconds)
        found = _RESULT.findall(''.join(tail))
        result = f', {found[-1][0]} {found[-1][1]}' if found else ''
        log(f'  {stage.name}: done in {fmt(seconds)}{result}')


def diagnose(config: str, checkpoint: Optional[str], images: str, picture: str,
             num_images: int = 64, cfg_options: Sequence[str] = ()) -> dict:
    """Correspondence accuracy, RankMe and hub share of a backbone (and the picture of its
    matches), from tools/visualize_correspondence.py; ``cfg_options`` are the overrides the
    checkpoint was pretrained with (its queue lengths, its matching)."""
    command = [sys.executable, osp.join(ROOT, 'tools/visualize_correspondence.py'), config,
               images, '--out', picture, '--num-images', str(num_images)]
    if checkpoint:
        command += ['--checkpoint', checkpoint]
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


def write_json(obj, path: str) -> None:
    with open(path, 'w') as f:
        json.dump(obj, f, indent=2)
