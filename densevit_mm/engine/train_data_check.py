"""Refuse, at start-up, a training set that cannot fill one step."""
from mmengine.dataset import InfiniteSampler
from mmengine.dist import get_world_size


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
