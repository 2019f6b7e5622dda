from .dense_contrastive_loss import DenseContrastiveLoss
from .global_contrastive_loss import GlobalContrastiveLoss
from .info_nce_function import info_nce
from .lse_routes import fused_kernel_for
from .memory_queue import MemoryQueue
from .queued_info_nce import QueuedInfoNCE

__all__ = ['DenseContrastiveLoss', 'fused_kernel_for', 'GlobalContrastiveLoss', 'MemoryQueue',
           'QueuedInfoNCE', 'info_nce']
