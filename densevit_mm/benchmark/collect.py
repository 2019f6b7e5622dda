"""Read mmengine work dirs into benchmark rows: method, backbone, pretraining, mIoU, AP.

Runs that differ only by their seed fall into the same row and column: the table shows
``mean ± std (n)``, and ``mean (n)`` for a single run.  A config may name the column of its
mIoU or box AP (``benchmark_column = 'mIoU linear'``); otherwise a frozen backbone's mIoU goes to
``mIoU frozen`` and a fine-tuned one to ``mIoU``.  Trees of cut runs are read too: a log line
that is no JSON (a run killed mid-write) is skipped and named, and a work dir that gives no
row is listed with the reason.
"""
import csv
import glob
import inspect
import json
import os
import os.path as osp
import textwrap
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from mmengine.config import Config

from densevit_mm.checkpoint import CheckpointFileError, load_checkpoint_file
from densevit_mm.datasets import BUILTIN_MARKER
from .statistics import calibrate, calibration_markdown, format_values, mean_std

PUBLISHED_CSV = osp.join(osp.dirname(__file__), 'published_results.csv')
METRICS = {'mIoU': 'mIoU', 'coco/bbox_mAP': 'APbox', 'coco/segm_mAP': 'APmask'}
# a run whose backbone is frozen whole reports its metrics under '<name> frozen'; configs
# may name their own column; these come first, in this order
RETRIEVAL = 'mIoU k-NN retrieval (no training)'  # tools/dense_retrieval.py's results
RETRIEVAL_FILE = 'dense_retrieval.json'
COLUMNS = ('mIoU linear (frozen)', 'mIoU FPN (frozen backbone)', RETRIEVAL,
           'APbox (FCOS, frozen backbone)', 'APbox (RetinaNet, frozen backbone)',
           'mIoU FPN (fine-tuned)', 'mIoU', 'mIoU frozen', 'APbox', 'APmask')
RANDOM_INIT, ORACLE = 'Random init', 'Supervised oracle (labels)'
# other self-supervised algorithms, by their registered model type
PEER_NAMES = {'MoCoV3': 'MoCo v3', 'MAE': 'MAE', 'DINO': 'DINO', 'iBOT': 'iBOT'}


@dataclass
class Row:
    method: str
    backbone: str
    pretraining_epochs: str
    checkpoint: str
    data: str
    metrics: Dict[str, List[float]] = field(default_factory=dict)  # one value per run (seed)
    configs: List[str] = field(default_factory=list)


@dataclass
class Collection:
    """What :func:`collect` found below a root."""
    rows: List[Row]
    left_out: List[Tuple[str, str]]  # (work dir, why it gives no row)
    skipped: List[str]  # '<scalars.json>, line <n>: ...' for each log line that is no JSON


def _read_scalars(path: str, skipped: List[str]) -> List[dict]:
    """The entries of mmengine's JSON-lines scalar log.  A line that is no JSON object (the
    last one of a run killed mid-write, or one garbled) is passed over and noted in
    ``skipped``; the lines after it still count."""
    entries = []
    with open(path, errors='replace') as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except json.JSONDecodeError as err:
                entry = err
            if isinstance(entry, dict):
                entries.append(entry)
                continue
            why = (f'not JSON ({entry.msg}: column {entry.colno}; cut short?)'
                   if isinstance(entry, json.JSONDecodeError) else 'not a JSON object')
            skipped.append(f'{path}, line {number}: {why}, skipped: {line.strip()[:60]!r}')
    return entries


def _last_metrics(entries: List[dict]) -> Dict[str, float]:
    found = {}
    for entry in entries:
        for key, name in METRICS.items():
            if key in entry:
                value = float(entry[key])
                found[name] = value * 100 if name.startswith('AP') else value
    return found


def _latest_run(runs: List[str], skipped: List[str]) -> Tuple[Optional[str], Dict[str, float]]:
    """The newest of a work dir's ``<timestamp>/vis_data`` folders that logged validation
    metrics, with the last value of each."""
    for run in sorted(runs, reverse=True):
        scalars = osp.join(run, 'scalars.json')
        if osp.isfile(scalars) and osp.isfile(osp.join(run, 'config.py')):
            metrics = _last_metrics(_read_scalars(scalars, skipped))
            if metrics:
                return run, metrics
    return None, {}


def _why_no_metrics(runs: List[str]) -> str:
    logged = [r for r in sorted(runs, reverse=True) if osp.isfile(osp.join(r, 'scalars.json'))
              and osp.isfile(osp.join(r, 'config.py'))]
    if not logged:
        return ('no vis_data/scalars.json with its config.py (the run stopped before its '
                'first log?)')
    try:
        validates = Config.fromfile(osp.join(logged[0], 'config.py')).get('val_evaluator')
    except Exception:  # a damaged config.py: say what the log says
        validates = True
    if not validates:
        return ('no mIoU or COCO AP logged: its config has no val_evaluator (a pretraining '
                'or --no-validate run)')
    return 'no mIoU or COCO AP logged (training cut before its first validation?)'


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
        return RANDOM_INIT, '0'
    if not osp.isfile(checkpoint):
        return f'(missing checkpoint {checkpoint})', '?'
    meta = load_checkpoint_file(checkpoint, mmap=True).get('meta', {})
    if 'cfg' not in meta:
        return f'external ({osp.basename(checkpoint)})', '?'
    cfg = Config.fromstring(meta['cfg'], file_format='.py')
    loss_lambda = cfg.model.get('loss_lambda')
    if cfg.model.get('type') == 'EncoderDecoder':  # a segmentation model trained with labels
        return ORACLE, f"{meta.get('iter', '?')} iters"
    if cfg.model.type in PEER_NAMES:
        return PEER_NAMES[cfg.model.type], str(meta.get('epoch', '?'))
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


def _retrieval_results(root: str, left_out: list) -> List[tuple]:
    """``(file, checkpoint, config path, data root, one mIoU per seed)`` of each
    :data:`RETRIEVAL_FILE` below ``root`` (written by ``tools/dense_retrieval.py --out``)."""
    found = []
    for path in sorted(glob.glob(osp.join(root, '**', RETRIEVAL_FILE), recursive=True)):
        try:
            with open(path) as f:
                result = json.load(f)
            settings = result['settings']
            values = [float(v) for v in result['mIoU_per_seed']]
        except (OSError, ValueError, KeyError, TypeError) as err:
            left_out.append((path, f'not a complete dense retrieval result '
                                   f'({type(err).__name__}: {err})'))
            continue
        if settings.get('oracle'):  # perfect features: a ceiling, not a backbone
            continue
        found.append((path, settings.get('checkpoint'), settings.get('config', ''),
                      settings.get('data_root', ''), values))
    return found


def collect(root: str) -> Collection:
    """One row per pretraining (method + checkpoint + backbone), merging its transfer runs;
    each work dir (a folder with ``<timestamp>/vis_data``) that gives no row, and why; each
    log line skipped."""
    rows: Dict[tuple, Row] = {}
    left_out, skipped = [], []
    for work_dir in sorted(glob.glob(osp.join(root, '**'), recursive=True)):
        runs = glob.glob(osp.join(work_dir, '*', 'vis_data'))
        if not osp.isdir(work_dir) or not runs:
            continue
        label = osp.normpath(work_dir)
        run, metrics = _latest_run(runs, skipped)
        if run is None:
            left_out.append((label, _why_no_metrics(runs)))
            continue
        try:
            cfg = Config.fromfile(osp.join(run, 'config.py'))
        except Exception as err:  # SyntaxError of a cut file, a missing custom import, ...
            left_out.append((label, f'its {osp.join(run, "config.py")} could not be read '
                                   f'({type(err).__name__}: {(str(err).splitlines() or [""])[0]})'))
            continue
        backbone = cfg.model.get('backbone', {})
        init_cfg = backbone.get('init_cfg') or {}
        checkpoint = init_cfg.get('checkpoint') if init_cfg.get('type') == 'Pretrained' else None
        try:
            method, epochs = describe_pretraining(checkpoint)
        except CheckpointFileError as err:  # replaced or cut since: its method is unknown
            left_out.append((label, f'its pretraining checkpoint could not be read: {err}'))
            continue
        data = 'built-in (generated)' if _is_builtin(_data_root(cfg)) else 'real'
        key = (method, checkpoint or '', _arch_name(backbone.get('arch', '?')), data)
        row = rows.setdefault(key, Row(method, key[2], epochs, checkpoint or '-', data))
        named = cfg.get('benchmark_column')
        suffix = ' frozen' if _backbone_frozen(backbone) else ''
        for name, value in metrics.items():
            # a config's own column takes its main metric (mIoU, or box AP)
            column = named if named and name in ('mIoU', 'APbox') else name + suffix
            row.metrics.setdefault(column, []).append(value)
        row.configs.append(osp.basename(label))
    for path, checkpoint, config, data_root, values in _retrieval_results(root, left_out):
        try:
            method, epochs = describe_pretraining(checkpoint)
            arch = Config.fromfile(config).model.backbone.get('arch', '?')
        except (CheckpointFileError, OSError) as err:
            left_out.append((path, f'its checkpoint or config could not be read: {err}'))
            continue
        data = 'built-in (generated)' if _is_builtin(data_root) else 'real'
        key = (method, checkpoint or '', _arch_name(arch), data)
        row = rows.setdefault(key, Row(method, key[2], epochs, checkpoint or '-', data))
        row.metrics.setdefault(RETRIEVAL, []).extend(values)
        row.configs.append(osp.basename(osp.dirname(path)))
    return Collection(list(rows.values()), left_out, skipped)


def collect_rows(root: str) -> List[Row]:
    """The rows of :func:`collect`, without what it left out or skipped."""
    return collect(root).rows


def columns_of(rows: List[Row]) -> List[str]:
    """The columns the rows fill: the standard ones first, then named ones as met."""
    found = [c for r in rows for c in r.metrics]
    return [c for c in COLUMNS if c in found] + list(dict.fromkeys(
        c for c in found if c not in COLUMNS))


def calibration(rows: List[Row]) -> List[dict]:
    """Oracle gap, seed std and their ratio per column (needs a random-init and an oracle
    row of the same data)."""
    by_method = {r.method: r for r in rows}
    if RANDOM_INIT not in by_method or ORACLE not in by_method:
        return []
    return calibrate(by_method[RANDOM_INIT].metrics, by_method[ORACLE].metrics, columns_of(rows))


def load_published(path: str = PUBLISHED_CSV) -> List[dict]:
    with open(path, newline='') as f:
        return list(csv.DictReader(f))


def markdown_table(rows: List[Row], published: List[dict],
                   left_out: Sequence[Tuple[str, str]] = (), skipped: Sequence[str] = ()) -> str:
    """The measured rows (with the calibration block), the work dirs ``left_out`` and the log
    lines ``skipped`` (as :func:`collect` gives them), then the published numbers."""
    columns = columns_of(rows)
    lines = ['## Measured', '',
             '| method | backbone | pretraining epochs | '
             + ' | '.join(columns) + ' | data | configs | checkpoint |',
             '|---|---|---|' + '---|' * len(columns) + '---|---|---|']
    for r in rows:
        values = ' | '.join(format_values(r.metrics.get(c, [])) for c in columns)
        lines.append(f'| {r.method} | {r.backbone} | {r.pretraining_epochs} | {values} | '
                     f'{r.data} | {", ".join(r.configs)} | {r.checkpoint} |')
    checks = calibration_markdown(calibration(rows))
    if checks:
        lines += ['', '## Calibration: does each column separate a labelled oracle from '
                  'random init?', '', checks.rstrip('\n')]
    if left_out:
        lines += ['', '## Left out (no row)', ''] + [f'- {d}: {why}' for d, why in left_out]
    if skipped:
        lines += ['', '## Log lines skipped (not JSON)', ''] + [f'- {s}' for s in skipped]
    lines += ['', '## Published (other methods, full-scale protocols; not measured here)', '',
              '| method | backbone | pretraining epochs | protocol | mIoU | APbox | APmask | '
              'source |', '|---|---|---|---|---|---|---|---|']
    for p in published:
        lines.append(f"| {p['method']} | {p['backbone']} | {p['pretraining_epochs'] or 'n/r'} | "
                     f"{p['protocol']} | {p['mIoU'] or '-'} | {p['APbox'] or '-'} | "
                     f"{p['APmask'] or '-'} | {p['source']} |")
    return '\n'.join(lines) + '\n'


def write_csv(rows: List[Row], published: List[dict], path: str) -> None:
    """One line per row; each column as its mean, with ``<column> std`` and ``<column> n``."""
    columns = columns_of(rows)
    stats = [f'{c} {s}' for c in columns for s in ('std', 'n')]
    published_fields = [k for p in published for k in p]
    fields = list(dict.fromkeys(['block', 'method', 'backbone', 'pretraining_epochs', 'protocol',
                                 *columns, *stats, 'data', 'config', 'checkpoint', 'source',
                                 *published_fields]))
    with open(path, 'w', newline='') as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for r in rows:
            values = {}
            for c in columns:
                v = r.metrics.get(c, [])
                mean, std = mean_std(v)
                values.update({c: mean if v else '', f'{c} std': std if len(v) > 1 else '',
                               f'{c} n': len(v) or ''})
            writer.writerow(dict(block='measured', method=r.method, backbone=r.backbone,
                                 pretraining_epochs=r.pretraining_epochs, **values, data=r.data,
                                 config=';'.join(r.configs), checkpoint=r.checkpoint))
        for p in published:
            writer.writerow(dict(block='published', **p))


def plot(rows: List[Row], path: str) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    metrics = columns_of(rows)
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        values, errors = zip(*(mean_std(r.metrics.get(metric, [])) for r in rows))
        errors = [e if e == e else 0 for e in errors]  # one run: no error bar
        ax.bar(range(len(rows)), values, yerr=errors, capsize=3,
               color=['#999999', '#4c72b0', '#dd8452', '#55a868', '#8172b3'][:len(rows)]
               if len(rows) <= 5 else None)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([textwrap.fill(r.method, 14) for r in rows], fontsize=7)
        ax.set_title(metric)
        for i, (v, e) in enumerate(zip(values, errors)):
            if v == v:  # above the error bar
                ax.text(i, v + e, f'{v:.1f}', ha='center', va='bottom', fontsize=8)
        ax.margins(y=0.12)
    data = sorted({r.data for r in rows})
    fig.suptitle(f'Measured transfer results ({", ".join(data)} data)')
    fig.tight_layout()
    os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
