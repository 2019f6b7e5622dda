from .resumable_batch_sampler import ResumableBatchSampler
from .resumable_sampler import ResumableSampler, draw_seeds

__all__ = ['ResumableBatchSampler', 'ResumableSampler', 'draw_seeds']
