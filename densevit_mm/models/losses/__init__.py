from .dense_contrastive_loss import DenseContrastiveLoss
from .global_contrastive_loss import GlobalContrastiveLoss
from .info_nce import QueuedInfoNCE, info_nce
from .lean_info_nce import chunked_info_nce, fused_info_nce, fused_kernel_for
from .memory_queue import MemoryQueue

__all__ = ['chunked_info_nce', 'DenseContrastiveLoss', 'fused_info_nce', 'fused_kernel_for',
           'GlobalContrastiveLoss', 'MemoryQueue', 'QueuedInfoNCE', 'info_nce']
