from .dense_contrastive_loss import DenseContrastiveLoss
from .global_contrastive_loss import GlobalContrastiveLoss
from .info_nce import QueuedInfoNCE, info_nce
from .memory_queue import MemoryQueue

__all__ = ['DenseContrastiveLoss', 'GlobalContrastiveLoss', 'MemoryQueue', 'QueuedInfoNCE',
           'info_nce']
