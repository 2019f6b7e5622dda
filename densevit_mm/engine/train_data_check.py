"""Refuse, at start-up, a training set that cannot fill one step or a pipeline whose
augmentation would be lost or fail on the device."""
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


def check_device_augmentation(runner) -> None:
    """Raise ``ValueError`` if the run would silently lose part of its augmentation, or fail
    at its first batch, because the pipeline, the collate function and the data
    preprocessor do not match.

    A pipeline that defers its photometric augmentation (``DeferredPhotometric``) must pack
    ``view_photometric`` and train with ``PhotometricDataPreprocessor`` (or
    ``DeviceAugmentDataPreprocessor``), which applies it; ``PhotometricDataPreprocessor`` in
    turn needs such a pipeline.  A pipeline that defers its crops (``DeferredResizedCrop``)
    must collate with ``collate_source_images`` and train with
    ``DeviceAugmentDataPreprocessor``, and these two need such a pipeline.
    """
    from densevit_mm.models.data_preprocessors import (DeviceAugmentDataPreprocessor,
                                                       PhotometricDataPreprocessor)

    def name(cfg) -> str:
        """A transform's, function's or class's type without its registry scope."""
        kind = cfg.get('type') if isinstance(cfg, dict) else cfg
        kind = getattr(kind, '__name__', kind)
        return kind.rsplit('.', 1)[-1] if isinstance(kind, str) else kind

    loader = runner.cfg.get('train_dataloader') or {}
    configs = list(_dicts(loader))
    has = {kind: any(name(c) == kind for c in configs)
           for kind in ('DeferredPhotometric', 'DeferredResizedCrop')}
    packed = any(name(c) == 'PackInputs' and 'view_photometric' in c.get('algorithm_keys', ())
                 for c in configs)
    collate = name(loader.get('collate_fn') or {}) == 'collate_source_images'
    model = runner.model.module if is_model_wrapper(runner.model) else runner.model
    preprocessor = getattr(model, 'data_preprocessor', None)
    example = ('configs/pretrain/densevit_s.py (views on the device) and '
               'densevit_s_device-photometric.py show what goes together')
    problems = []
    if has['DeferredPhotometric'] and not packed:
        problems.append("the training pipeline defers its photometric augmentation "
                        "(DeferredPhotometric) but PackInputs does not pack 'view_photometric', "
                        "so it would never be applied: add it to PackInputs' algorithm_keys")
    if has['DeferredPhotometric'] and not isinstance(preprocessor, PhotometricDataPreprocessor):
        problems.append(
            'the training pipeline defers its photometric augmentation (DeferredPhotometric) '
            f'but the data preprocessor is {type(preprocessor).__name__}, which would train '
            "without it: set data_preprocessor=dict(type='PhotometricDataPreprocessor')")
    if type(preprocessor) is PhotometricDataPreprocessor and not has['DeferredPhotometric']:
        problems.append(
            'PhotometricDataPreprocessor applies the photometric augmentation that '
            'DeferredPhotometric draws, but the training pipeline has no DeferredPhotometric: '
            'wrap its photometric transforms in one, or use SelfSupDataPreprocessor')
    if has['DeferredResizedCrop'] and not collate:
        problems.append('the training pipeline defers its crops (DeferredResizedCrop), so its '
                        "samples are decoded images of any size: set train_dataloader.collate_fn="
                        "dict(type='collate_source_images')")
    if has['DeferredResizedCrop'] and not isinstance(preprocessor, DeviceAugmentDataPreprocessor):
        problems.append(
            'the training pipeline defers its crops (DeferredResizedCrop) but the data '
            f'preprocessor is {type(preprocessor).__name__}, which does not make views: set '
            "data_preprocessor=dict(type='DeviceAugmentDataPreprocessor')")
    if not has['DeferredResizedCrop'] and (
            collate or isinstance(preprocessor, DeviceAugmentDataPreprocessor)):
        problems.append(
            'collate_source_images and DeviceAugmentDataPreprocessor make views on the device '
            'from decoded images, but the training pipeline has no DeferredResizedCrop: use '
            "it in MultiViewWithGeometry's view pipelines, or default_collate and "
            'SelfSupDataPreprocessor')
    if problems:
        raise ValueError('; '.join(problems) + f' ({example})')
