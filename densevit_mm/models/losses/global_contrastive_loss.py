"""MoCo-style InfoNCE on one global vector per image, with its own key queue."""
import torch
import torch.nn.functional as F

from mmpretrain.registry import MODELS
from .queued_info_nce import QueuedInfoNCE


@MODELS.register_module()
class GlobalContrastiveLoss(QueuedInfoNCE):
    """InfoNCE of each query against its key and a queue of past keys (MoCo v2).

    Args:
        queue_len (int): Number of negative keys kept. Defaults to 65536.
        feat_dim (int): Dimension of the projected vectors. Defaults to 128.
        temperature (float): Softmax temperature. Defaults to 0.2.
        implementation (str), chunk_size (int): How the InfoNCE is computed; see
            :class:`QueuedInfoNCE`.
    """

    def forward(self, q: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        """Loss of queries ``q`` ``(B, D)`` against keys ``k`` ``(B, D)``; then enqueue ``k``.

        Inputs need not be normalised.  The negatives are the queue before this call.
        """
        if q.dim() != 2 or q.shape != k.shape or q.shape[1] != self.feat_dim:
            raise ValueError(f'q and k must both have shape (B, {self.feat_dim}), got '
                             f'{tuple(q.shape)} and {tuple(k.shape)}')
        q = F.normalize(q, dim=1)
        k = F.normalize(k.detach(), dim=1)
        return self.contrast_and_enqueue(q, k, k)
