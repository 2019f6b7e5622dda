"""Plot pretraining curves: each method's loss terms unweighted, with their chance level.

    python tools/plot_training_curves.py work_dirs/densevit_s [more work dirs] --out curves.png

One panel per work dir: every loss term the method logs, as the term itself (DenseViT's
``infonce_global`` / ``infonce_dense`` before the lambda weights, MoCo v3's InfoNCE without its
``2 * temperature`` factor, per view pair), each with its chance level dashed: the value of a
model that has learned nothing (InfoNCE: ln of the number of candidates; DINO / iBOT: ln of the
prototypes, iBOT's patch term times the share of images masked; MAE with normalised
pixels: 1).  A term well under its chance learned something; a
weight that halves a term does not move its curve.  A last panel shows the correspondence
accuracy of the runs that log it (``corr_acc``).  The method, its sizes and the number of
processes are read from the run's own config and checkpoint.
"""
import argparse
import glob
import json
import math
import os.path as osp
from typing import Callable, Dict, List, NamedTuple

from mmengine.config import Config


class Term(NamedTuple):
    key: str  # the log key
    label: str
    scale: Callable[[Config], float]  # logged value * scale = the term as plotted
    chance: Callable[[Config, int], float]  # (config, processes) -> chance level


def _queue_chance(loss: str) -> Callable[[Config, int], float]:
    """InfoNCE against a queue: the positive and ``queue_len`` negatives."""
    return lambda cfg, _: math.log(cfg.model.head[loss].get('queue_len', 65536) + 1)


def _batch_chance(cfg: Config, processes: int) -> float:
    """InfoNCE against the batch of every process (MoCo v3 gathers the keys)."""
    return math.log(cfg.train_dataloader.batch_size * processes)


def _prototype_chance(cfg: Config, _) -> float:
    """Cross-entropy of a uniform student against any teacher: ln of the prototypes."""
    return math.log(cfg.model.head.out_channels)


def _masked_patch_chance(cfg: Config, processes: int) -> float:
    """iBOT's patch term: ln of the prototypes on a masked image, 0 on an unmasked one (it
    adds nothing), averaged over the batch: times the share of images masked."""
    return _prototype_chance(cfg, processes) * cfg.model.get('mask_prob', 1.)


def _unit(_cfg, *_) -> float:
    return 1.


# model type -> the terms it logs.  MoCo v3's head weights its cross-entropy by
# 2 * temperature (its config's loss_weight) and its algorithm adds the two view orders.
TERMS: Dict[str, List[Term]] = {
    'DenseViTSelfSup': [Term('infonce_global', 'global InfoNCE', _unit,
                             _queue_chance('loss_global')),
                        Term('infonce_dense', 'dense InfoNCE', _unit,
                             _queue_chance('loss_dense'))],
    'MoCoV3': [Term('loss', 'InfoNCE (per view order)',
                    lambda cfg: 1 / (2 * cfg.model.head.loss.loss_weight), _batch_chance)],
    'MAE': [Term('loss', 'pixel MSE (normalised patches)', _unit, _unit)],
    'DINO': [Term('loss_cls', '[CLS] cross-entropy', _unit, _prototype_chance)],
    'iBOT': [Term('loss_cls', '[CLS] cross-entropy', _unit, _prototype_chance),
             Term('loss_patch', 'masked-patch cross-entropy', _unit, _masked_patch_chance)],
}
ACCURACY = 'corr_acc'


def _newest_run(work_dir: str) -> str:
    runs = sorted(glob.glob(osp.join(work_dir, '*', 'vis_data', 'scalars.json')))
    if not runs:
        raise SystemExit(f'no mmengine log (*/vis_data/scalars.json) in {work_dir}')
    return osp.dirname(runs[-1])


def read_scalars(work_dir: str, keys) -> Dict[str, tuple]:
    """``key -> (steps, values)`` of the newest run in ``work_dir``."""
    series = {key: ([], []) for key in keys}
    with open(osp.join(_newest_run(work_dir), 'scalars.json')) as f:
        for line in f:
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:  # the last line of a killed run
                continue
            for key in keys:
                if key in entry:
                    series[key][0].append(entry['step'])
                    series[key][1].append(entry[key])
    return series


def _processes(work_dir: str) -> int:
    """Processes of the run, from the run record of its newest checkpoint (1 when none)."""
    from densevit_mm.checkpoint import load_checkpoint_file
    checkpoints = sorted(glob.glob(osp.join(work_dir, '*.pth')), key=osp.getmtime)
    if not checkpoints:
        return 1
    run = load_checkpoint_file(checkpoints[-1], mmap=True).get('meta', {}).get('run', {})
    return run.get('world_size') or 1


def terms_of(work_dir: str) -> tuple:
    """The run's config and its :data:`TERMS`."""
    cfg = Config.fromfile(osp.join(_newest_run(work_dir), 'config.py'))
    if cfg.model.type not in TERMS:
        raise SystemExit(f'{work_dir}: no loss terms known for model type {cfg.model.type!r} '
                         f'(known: {", ".join(TERMS)}); add it to TERMS in {__file__}')
    return cfg, TERMS[cfg.model.type]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('work_dirs', nargs='+')
    parser.add_argument('--out', default='training_curves.png')
    args = parser.parse_args()
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    runs = [(osp.basename(osp.normpath(w)), w, *terms_of(w)) for w in args.work_dirs]
    series = {w: read_scalars(w, [t.key for t in terms] + [ACCURACY])
              for _, w, _, terms in runs}
    accuracy = [(name, series[w][ACCURACY]) for name, w, _, _ in runs if series[w][ACCURACY][0]]
    panels = len(runs) + bool(accuracy)
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 3.4), squeeze=False)
    for ax, (name, work_dir, cfg, terms) in zip(axes[0], runs):
        processes = _processes(work_dir)
        for i, term in enumerate(terms):
            steps, values = series[work_dir][term.key]
            color = f'C{i}'
            if not steps:
                print(f'{work_dir}: no {term.key} logged (a run older than this plot?)')
                continue
            scale = term.scale(cfg)
            ax.plot(steps, [v * scale for v in values], color=color, label=term.label,
                    marker='.' if len(steps) < 10 else None)  # a short run: its points
            chance = term.chance(cfg, processes)
            ax.axhline(chance, color=color, ls='--', lw=0.8,
                       label=f'chance {chance:.2f}')
        ax.set_title(f'{name} ({cfg.model.type})', fontsize=9)
        ax.set_xlabel('iteration')
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=6)
    if accuracy:
        ax = axes[0][-1]
        for name, (steps, values) in accuracy:
            ax.plot(steps, values, label=name)
        ax.set_title('correspondence accuracy (corr_acc)', fontsize=9)
        ax.set_xlabel('iteration')
        ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(args.out, dpi=110)
    print(f'wrote {args.out}')


if __name__ == '__main__':
    main()
