from .dense_contrastive_loss import DenseContrastiveLoss
from .global_contrastive_loss import GlobalContrastiveLoss
from .info_nce_function import chunked_info_nce, fused_info_nce, info_nce, naive_info_nce
from .lse_routes import fused_kernel_for
from .memory_queue import MemoryQueue
from .queued_info_nce import QueuedInfoNCE

__all__ = ['chunked_info_nce', 'DenseContrastiveLoss', 'fused_info_nce', 'fused_kernel_for',
           'GlobalContrastiveLoss', 'MemoryQueue', 'naive_info_nce', 'QueuedInfoNCE',
           'info_nce']
