"""Refuse, at start-up, a training set that cannot fill one step or a pipeline whose
photometric augmentation would be lost."""
from typing import Any, Iterator

from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_world_size
from mmengine.model import is_model_wrapper


def check_train_dataloader(runner) -> None:
    """Raise ``ValueError`` if an epoch of ``runner``'s training loader has no batch.

    With ``drop_last=True`` a batch larger than the data set (per process) gives epochs of
    zero iterations: mmengine then runs none and saves untrained checkpoints, or fails deep
    inside the schedulers.  (An ``InfiniteSampler`` repeats images to fill a batch.)
    """
    loader = runner.train_loop.dataloader
    if len(loader) > 0 or isinstance(loader.sampler, InfiniteSampler):
        return
    dataset, batch, world = loader.dataset, loader.batch_size, get_world_size()
    where = getattr(dataset, 'img_prefix', None) or getattr(dataset, 'data_root', '')
    raise ValueError(
        f'train_dataloader.batch_size={batch} per process x {world} process(es) = '
        f'{batch * world} images per step, but the training set ({type(dataset).__name__} in '
        f'{where}) has only {len(dataset)} images, and with drop_last=True an epoch has no '
        'step. Use a smaller batch (--cfg-options train_dataloader.batch_size=N), fewer '
        'processes, or more images.')


def _dicts(node: Any) -> Iterator[dict]:
    """Every dict in a nested config of dicts and lists."""
    if isinstance(node, dict):
        yield node
        node = list(node.values())
    if isinstance(node, (list, tuple)):
        for item in node:
            yield from _dicts(item)


def check_photometric_option(runner) -> None:
    """Raise ``ValueError`` if the run would silently lose its photometric augmentation.

    A pipeline that defers it (``DeferredPhotometric``) must pack ``view_photometric`` and
    train with ``PhotometricDataPreprocessor``, which applies it; that preprocessor in turn
    needs such a pipeline.
    """
    from densevit_mm.models.data_preprocessors import PhotometricDataPreprocessor

    def name(cfg: dict) -> str:
        kind = cfg.get('type')
        return getattr(kind, '__name__', kind)

    configs = list(_dicts(runner.cfg.get('train_dataloader', {})))
    deferred = any(name(c) == 'DeferredPhotometric' for c in configs)
    packed = any(name(c) == 'PackInputs' and 'view_photometric' in c.get('algorithm_keys', ())
                 for c in configs)
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    applied = isinstance(getattr(model, 'data_preprocessor', None), PhotometricDataPreprocessor)
    example = 'configs/pretrain/densevit_s_device-photometric.py shows the three together'
    if deferred and not packed:
        raise ValueError(
            "the training pipeline defers its photometric augmentation (DeferredPhotometric) "
            "but PackInputs does not pack 'view_photometric', so it would never be applied: "
            f"add it to PackInputs' algorithm_keys ({example})")
    if deferred and not applied:
        raise ValueError(
            'the training pipeline defers its photometric augmentation (DeferredPhotometric) '
            f'but the data preprocessor is {type(model.data_preprocessor).__name__}, which '
            "would train without it: set data_preprocessor=dict(type="
            f"'PhotometricDataPreprocessor') ({example})")
    if applied and not deferred:
        raise ValueError(
            'PhotometricDataPreprocessor applies the photometric augmentation that '
            'DeferredPhotometric draws, but the training pipeline has no DeferredPhotometric: '
            'wrap its photometric transforms in one, or use SelfSupDataPreprocessor '
            f'({example})')
