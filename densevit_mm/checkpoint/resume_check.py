"""What a resumed run must share with the run that wrote its checkpoint.

A checkpoint restores weights, optimizer, schedule and loop position; all of them were made
for one model, one global batch and one data set.  ``CrashSafeCheckpointHook`` stores
:func:`run_record` in every checkpoint's ``meta['run']``; ``tools/train.py --resume`` calls
:func:`check_resume` before anything is loaded:

- another model shape (queue length, arch, widths): refused, naming the tensors and the
  config keys that differ (mmengine would replace the mismatched tensors by fresh ones, or
  fail inside the optimizer);
- another number of processes with the same global batch (processes x per-process batch):
  taken; each step sees the same images, the schedule is unchanged;
- another global batch: refused unless accepted (``--accept-changes batch``): the lr and the
  schedule's iteration counts were set for the old one and stay as they are;
- another data set (number of images or their list): refused unless accepted
  (``--accept-changes data``): the epoch in progress continues in the new set's order, so
  some of its images may be seen twice and others not at all, and an epoch-based schedule
  keeps the epoch length it was built with.
"""
import hashlib
import logging
import os.path as osp
from typing import Any, Dict, Iterable, List, Optional, Tuple

from mmengine.config import Config

ACCEPTABLE = ('batch', 'data')


class ResumeMismatchError(RuntimeError):
    """The run differs from the checkpoint's in a way that resuming cannot take."""


def dataset_fingerprint(dataset) -> Optional[str]:
    """SHA-1 of the data set's file list in index order (paths relative to its
    ``data_root``), or None when its entries name no ``img_path``."""
    cached = getattr(dataset, '_densevit_fingerprint', None)
    if cached is not None:
        return cached
    root = getattr(dataset, 'data_root', None) or ''
    digest = hashlib.sha1()
    for i in range(len(dataset)):
        path = dataset.get_data_info(i).get('img_path')
        if path is None:
            return None
        digest.update((osp.relpath(path, root) if root else path).encode() + b'\0')
    dataset._densevit_fingerprint = digest.hexdigest()
    return dataset._densevit_fingerprint


def run_record(dataloader, world_size: int) -> Dict[str, Any]:
    """What resuming depends on beyond the weights: processes, per-process batch, and the
    training set's size and file-list fingerprint."""
    # mmdet's configs give a batch sampler, and the loader no batch size
    batch = dataloader.batch_size or getattr(dataloader.batch_sampler, 'batch_size', None)
    return dict(world_size=world_size, batch_size=batch,
                dataset_size=len(dataloader.dataset),
                dataset_fingerprint=dataset_fingerprint(dataloader.dataset))


def _flatten(node: Any, prefix: str) -> Iterable[Tuple[str, Any]]:
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _flatten(value, f'{prefix}.{key}')
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _flatten(value, f'{prefix}[{i}]')
    else:
        yield prefix, node


def _config_differences(saved_text: Optional[str], cfg: Config) -> List[str]:
    """``model.*`` settings that differ between the checkpoint's config and ``cfg``."""
    if not saved_text:
        return []
    try:
        saved = Config.fromstring(saved_text, '.py')
    except Exception:  # a config mmengine cannot parse again: name the tensors only
        return []
    old = dict(_flatten(saved.get('model', {}), 'model'))
    new = dict(_flatten(cfg.get('model', {}), 'model'))
    return [f'{key}: {old.get(key, "(unset)")!r} -> {new.get(key, "(unset)")!r}'
            for key in sorted(old.keys() | new.keys()) if old.get(key) != new.get(key)]


def _shape_differences(saved: Dict[str, Any], model_state: Dict[str, Any]) -> List[str]:
    lines = []
    for key in sorted(saved.keys() | model_state.keys()):
        if key not in model_state:
            lines.append(f'{key}: in the checkpoint, not in the model')
        elif key not in saved:
            lines.append(f'{key}: in the model, not in the checkpoint')
        elif tuple(saved[key].shape) != tuple(model_state[key].shape):
            lines.append(f'{key}: {tuple(saved[key].shape)} in the checkpoint, '
                         f'{tuple(model_state[key].shape)} now')
    return lines


def _listed(lines: List[str], limit: int = 8) -> str:
    more = f'; and {len(lines) - limit} more' if len(lines) > limit else ''
    return '; '.join(lines[:limit]) + more


def check_resume(path: str, checkpoint: dict, model_state: Dict[str, Any], cfg: Config,
                 record: Dict[str, Any], accept: Iterable[str] = ()
                 ) -> List[Tuple[int, str]]:
    """Compare the run about to resume with the one that wrote ``checkpoint``.

    Args:
        path (str): The checkpoint's file (for messages).
        checkpoint (dict): Its contents (``state_dict`` and ``meta``).
        model_state (dict): The new model's state dict (shapes are compared).
        cfg (Config): The new run's config.
        record (dict): :func:`run_record` of the new run.
        accept (iterable of str): Changes to take anyway: ``'batch'``, ``'data'``.

    Returns:
        list: ``(logging level, message)`` notes for the run's log.

    Raises:
        ResumeMismatchError: naming what differs and the way out.
    """
    meta = checkpoint.get('meta') or {}
    shapes = _shape_differences(checkpoint.get('state_dict', {}), model_state)
    if shapes:
        keys = _config_differences(meta.get('cfg'), cfg)
        raise ResumeMismatchError(
            f'--resume: {path} was trained with another model: ' + _listed(shapes) + '. '
            + (f'The config differs in {_listed(keys)}. ' if keys else '')
            + 'Resume with the config it was trained with, or start a new run that '
            f'initialises from its weights (load_from={path!r}, without --resume).')

    saved = meta.get('run')
    if saved is None:
        return [(logging.WARNING, f'--resume: {path} records no processes, batch or data set '
                 '(written by an older version): not checked')]
    notes = []
    old_global = saved['world_size'] * saved['batch_size']
    new_global = record['world_size'] * record['batch_size']
    setup = (f"{saved['world_size']} process(es) x {saved['batch_size']} images = global "
             f"batch {old_global}")
    now = (f"{record['world_size']} process(es) x {record['batch_size']} = "
           f'{new_global}')
    if old_global != new_global:
        if 'batch' not in accept:
            world = record['world_size']
            same = (f'--cfg-options train_dataloader.batch_size={old_global // world} with '
                    f'{world} process(es)' if old_global % world == 0 else
                    f"{saved['world_size']} process(es) x {saved['batch_size']}")
            raise ResumeMismatchError(
                f'--resume: {path} was trained with {setup}; this run has {now}. Its lr and '
                f'schedule were set for {old_global}. Resume with that global batch ({same}), '
                f'or pass --accept-changes batch to continue with {new_global} at the same lr '
                'and iteration counts.')
        notes.append((logging.WARNING, f'--resume: global batch {old_global} -> {new_global} '
                      '(--accept-changes batch): the lr and the schedule\'s iteration counts '
                      f'stay as they were set for {old_global}'))
    elif saved['world_size'] != record['world_size']:
        notes.append((logging.INFO, f'--resume: {setup} before, {now} now: the same global '
                      'batch, so the same images per step and the same schedule'))

    changed = (saved['dataset_size'] != record['dataset_size']
               or saved['dataset_fingerprint'] != record['dataset_fingerprint'])
    if changed:
        what = (f"{saved['dataset_size']} images then, {record['dataset_size']} now"
                if saved['dataset_size'] != record['dataset_size'] else
                f"{record['dataset_size']} images then and now, but another file list")
        if 'data' not in accept:
            raise ResumeMismatchError(
                f'--resume: the training set changed since {path} was written ({what}). '
                'Resuming would continue the interrupted epoch in the new set\'s order (some '
                'of its images seen twice, others never) and keep the schedule\'s epoch '
                'length. Restore the set it was trained on, or pass --accept-changes data '
                'to continue anyway.')
        notes.append((logging.WARNING, f'--resume: the training set changed ({what}; '
                      '--accept-changes data): the epoch in progress continues in the new '
                      "order and the schedule keeps its epoch length"))
    return notes
