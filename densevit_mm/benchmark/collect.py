"""Read mmengine work dirs into benchmark rows: method, backbone, pretraining, mIoU, AP."""
import csv
import glob
import inspect
import json
import os
import os.path as osp
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from mmengine.config import Config

from densevit_mm.checkpoint import load_checkpoint_file
from densevit_mm.datasets import BUILTIN_MARKER

PUBLISHED_CSV = osp.join(osp.dirname(__file__), 'published_results.csv')
METRICS = {'mIoU': 'mIoU', 'coco/bbox_mAP': 'APbox', 'coco/segm_mAP': 'APmask'}
# a run whose backbone is frozen whole reports its metrics under '<name> frozen'
COLUMNS = ('mIoU', 'mIoU frozen', 'APbox', 'APmask')


@dataclass
class Row:
    method: str
    backbone: str
    pretraining_epochs: str
    checkpoint: str
    data: str
    metrics: Dict[str, float] = field(default_factory=dict)
    configs: List[str] = field(default_factory=list)


def _latest_run(work_dir: str) -> Optional[str]:
    """The newest ``<timestamp>/vis_data`` of a work dir that logged validation metrics."""
    for run in sorted(glob.glob(osp.join(work_dir, '*', 'vis_data')), reverse=True):
        scalars = osp.join(run, 'scalars.json')
        if osp.isfile(scalars) and osp.isfile(osp.join(run, 'config.py')):
            with open(scalars) as f:
                if any(any(k in line for k in METRICS) for line in f):
                    return run
    return None


def _last_metrics(scalars_file: str) -> Dict[str, float]:
    found = {}
    with open(scalars_file) as f:
        for line in f:
            entry = json.loads(line)
            for key, name in METRICS.items():
                if key in entry:
                    value = float(entry[key])
                    found[name] = value * 100 if name.startswith('AP') else value
    return found


def _backbone_frozen(backbone: dict) -> bool:
    """Whether ``frozen_stages`` covers every layer (a frozen-feature probe, not fine-tuning)."""
    from densevit_mm.models import DenseViT
    default_arch = inspect.signature(DenseViT).parameters['arch'].default
    arch = backbone.get('arch', default_arch)
    if isinstance(arch, str):
        arch = DenseViT.arch_zoo.get(arch.lower(), {})
    num_layers = arch.get('num_layers')
    return num_layers is not None and backbone.get('frozen_stages', -1) >= num_layers


def _arch_name(arch) -> str:
    if isinstance(arch, str):
        return arch
    return f"ViT {arch['embed_dims']}w/{arch['num_layers']}L/{arch['num_heads']}h"


def describe_pretraining(checkpoint: Optional[str]) -> tuple:
    """``(method, epochs)`` of a backbone checkpoint, read from the config stored in it."""
    if not checkpoint:
        return 'Random init', '0'
    if not osp.isfile(checkpoint):
        return f'(missing checkpoint {checkpoint})', '?'
    meta = load_checkpoint_file(checkpoint, mmap=True).get('meta', {})
    if 'cfg' not in meta:
        return f'external ({osp.basename(checkpoint)})', '?'
    cfg = Config.fromstring(meta['cfg'], file_format='.py')
    loss_lambda = cfg.model.get('loss_lambda')
    if loss_lambda is None:
        return f'{cfg.model.type} ({osp.basename(checkpoint)})', str(meta.get('epoch', '?'))
    method = ('Global-only contrastive (lambda=0)' if loss_lambda == 0 else
              f'DenseViT (lambda={loss_lambda:g})')
    return method, str(meta.get('epoch', '?'))


def _is_builtin(data_root: str) -> bool:
    """Built-in data carries a marker file at its root or a parent."""
    path = osp.abspath(data_root)
    while True:
        if osp.isfile(osp.join(path, BUILTIN_MARKER)):
            return True
        parent = osp.dirname(path)
        if parent == path:
            return False
        path = parent


def _data_root(cfg: Config) -> str:
    dataset = cfg.val_dataloader.dataset
    while 'dataset' in dataset:
        dataset = dataset.dataset
    return dataset.get('data_root', '')


def collect_rows(root: str) -> List[Row]:
    """One row per pretraining (method + checkpoint + backbone), merging its transfer runs."""
    rows: Dict[tuple, Row] = {}
    for work_dir in sorted(glob.glob(osp.join(root, '**'), recursive=True)):
        if not osp.isdir(work_dir):
            continue
        run = _latest_run(work_dir)
        if run is None:
            continue
        cfg = Config.fromfile(osp.join(run, 'config.py'))
        backbone = cfg.model.get('backbone', {})
        init_cfg = backbone.get('init_cfg') or {}
        checkpoint = init_cfg.get('checkpoint') if init_cfg.get('type') == 'Pretrained' else None
        method, epochs = describe_pretraining(checkpoint)
        data = 'built-in (generated)' if _is_builtin(_data_root(cfg)) else 'real'
        key = (method, checkpoint or '', _arch_name(backbone.get('arch', '?')), data)
        row = rows.setdefault(key, Row(method, key[2], epochs, checkpoint or '-', data))
        metrics = _last_metrics(osp.join(run, 'scalars.json'))
        suffix = ' frozen' if _backbone_frozen(backbone) else ''
        row.metrics.update({name + suffix: value for name, value in metrics.items()})
        row.configs.append(osp.basename(osp.normpath(work_dir)))
    return list(rows.values())


def load_published(path: str = PUBLISHED_CSV) -> List[dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def _fmt(value: Optional[float]) -> str:
    return '-' if value is None else f'{value:.1f}'


def markdown_table(rows: List[Row], published: List[dict]) -> str:
    lines = ['## Measured', '',
             '| method | backbone | pretraining epochs | '
             + ' | '.join(COLUMNS) + ' | data | configs | checkpoint |',
             '|---|---|---|' + '---|' * len(COLUMNS) + '---|---|---|']
    for r in rows:
        values = ' | '.join(_fmt(r.metrics.get(c)) for c in COLUMNS)
        lines.append(f'| {r.method} | {r.backbone} | {r.pretraining_epochs} | {values} | '
                     f'{r.data} | {", ".join(r.configs)} | {r.checkpoint} |')
    lines += ['', '## Published (other methods, full-scale protocols; not measured here)', '',
              '| method | backbone | pretraining epochs | protocol | mIoU | APbox | APmask | '
              'source |', '|---|---|---|---|---|---|---|---|']
    for p in published:
        lines.append(f"| {p['method']} | {p['backbone']} | {p['pretraining_epochs'] or 'n/r'} | "
                     f"{p['protocol']} | {p['mIoU'] or '-'} | {p['APbox'] or '-'} | "
                     f"{p['APmask'] or '-'} | {p['source']} |")
    return '\n'.join(lines) + '\n'


def write_csv(rows: List[Row], published: List[dict], path: str) -> None:
    fields = ['block', 'method', 'backbone', 'pretraining_epochs', 'protocol', *COLUMNS,
              'data', 'config', 'checkpoint', 'source']
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            writer.writerow(dict(block='measured', method=r.method, backbone=r.backbone,
                                 pretraining_epochs=r.pretraining_epochs,
                                 **{c: r.metrics.get(c, '') for c in COLUMNS}, data=r.data,
                                 config=';'.join(r.configs), checkpoint=r.checkpoint))
        for p in published:
            writer.writerow(dict(block='published', **p))


def plot(rows: List[Row], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    metrics = [c for c in COLUMNS if any(c in r.metrics for r in rows)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values = [r.metrics.get(metric, float('nan')) for r in rows]
        ax.bar(range(len(rows)), values, color=['#999999', '#4c72b0', '#dd8452', '#55a868'][
            :len(rows)] if len(rows) <= 4 else None)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([r.method.replace(' (', '\n(') for r in rows], fontsize=7)
        ax.set_title(metric)
        for i, v in enumerate(values):
            if v == v:
                ax.text(i, v, f'{v:.1f}', ha='center', va='bottom', fontsize=8)
    data = sorted({r.data for r in rows})
    fig.suptitle(f'Measured transfer results ({", ".join(data)} data)')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
