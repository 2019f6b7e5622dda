"""DenseCL's dense term: InfoNCE at every patch location against a queue."""
from typing import Optional

import torch
import torch.nn.functional as F

from mmpretrain.registry import MODELS
from .queued_info_nce import QueuedInfoNCE


@MODELS.register_module()
class DenseContrastiveLoss(QueuedInfoNCE):
    """Dense contrastive loss of DenseCL (Wang et al., CVPR 2021), for patch tokens.

    For every location ``i`` of the query view, the positive key is the key-view location
    whose *backbone* feature is most similar (:meth:`extract_correspondence`); the negatives
    are the queue.  After the loss, one key per image is written to the queue: the
    L2-normalised mean of that image's dense keys (DenseCL's pooled key).

    Args:
        queue_len (int): Number of negative keys kept. Defaults to 65536.
        feat_dim (int): Dimension of the dense projections. Defaults to 128.
        temperature (float): Softmax temperature. Defaults to 0.2.
        implementation (str), chunk_size (int): How the InfoNCE is computed; see
            :class:`QueuedInfoNCE`.
    """

    @staticmethod
    @torch.no_grad()
    def extract_correspondence(feat1: torch.Tensor, feat2: torch.Tensor) -> torch.Tensor:
        """Index of the most cosine-similar location of view 2 for each location of view 1,
        computed in float32 whatever the autocast: bfloat16 cosines lie about 0.004 apart near
        1, so near-ties between neighbouring patches would go to the lowest index.

        Args:
            feat1 (Tensor): ``(B, N, C)`` features of view 1.
            feat2 (Tensor): ``(B, M, C)`` features of view 2.

        Returns:
            Tensor: long ``(B, N)``; entry ``[b, i]`` is ``argmax_j cos(feat1[b, i], feat2[b, j])``.
        """
        if feat1.dim() != 3 or feat2.dim() != 3 or feat1.shape[0] != feat2.shape[0] \
                or feat1.shape[2] != feat2.shape[2]:
            raise ValueError('extract_correspondence expects (B, N, C) and (B, M, C) features, got '
                             f'{tuple(feat1.shape)} and {tuple(feat2.shape)}')
        with torch.autocast(feat1.device.type, enabled=False):
            feat1, feat2 = F.normalize(feat1.float(), dim=2), F.normalize(feat2.float(), dim=2)
            sim = feat1 @ feat2.transpose(1, 2)  # (B, N, M)
        return sim.argmax(dim=2)

    def forward(self, q_dense: torch.Tensor, k_dense: torch.Tensor, q_backbone: torch.Tensor,
                k_backbone: torch.Tensor, k_pooled: Optional[torch.Tensor] = None,
                match: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Dense loss averaged over all ``B * N`` locations; then enqueue the pooled keys.

        Args:
            q_dense (Tensor): ``(B, N, D)`` dense projections of the query view.
            k_dense (Tensor): ``(B, N, D)`` dense projections of the key view (no gradient).
            q_backbone (Tensor): ``(B, N, C)`` backbone patch features of the query view.
            k_backbone (Tensor): ``(B, N, C)`` backbone patch features of the key view.
            k_pooled (Tensor, optional): ``(B, D)`` per-image keys to enqueue, when the neck
                has them already; defaults to the mean of ``k_dense`` over N.
            match (Tensor, optional): long ``(B, N)`` key index of each query location, when
                the caller has computed it (``DenseViTSelfSup.match_patches``: once per step,
                with its layer and centring options); defaults to
                ``extract_correspondence(q_backbone, k_backbone)``.

        Returns:
            Tensor: Scalar loss.  None of the inputs needs to be normalised.
        """
        if q_dense.dim() != 3 or q_dense.shape != k_dense.shape \
                or q_dense.shape[2] != self.feat_dim:
            raise ValueError(f'q_dense and k_dense must both have shape (B, N, {self.feat_dim}), '
                             f'got {tuple(q_dense.shape)} and {tuple(k_dense.shape)}')
        if q_backbone.shape[:2] != q_dense.shape[:2] or k_backbone.shape != q_backbone.shape:
            raise ValueError('q_backbone and k_backbone must both have shape (B, N, C) with the '
                             f'B, N of the dense features {tuple(q_dense.shape[:2])}, got '
                             f'{tuple(q_backbone.shape)} and {tuple(k_backbone.shape)}')
        k_dense = k_dense.detach()
        if match is None:
            match = self.extract_correspondence(q_backbone, k_backbone.detach())  # (B, N)
        elif match.shape != q_dense.shape[:2]:
            raise ValueError(f'match must have shape {tuple(q_dense.shape[:2])} (B, N), got '
                             f'{tuple(match.shape)}')
        k_matched = torch.gather(
            k_dense, 1, match.unsqueeze(2).expand(-1, -1, k_dense.shape[2]))  # (B, N, D)
        q = F.normalize(q_dense, dim=2).flatten(0, 1)  # (B*N, D)
        k = F.normalize(k_matched, dim=2).flatten(0, 1)  # (B*N, D)
        if k_pooled is None:
            k_pooled = k_dense.mean(dim=1)  # (B, D): DenseCL's queue entry
        return self.contrast_and_enqueue(q, k, F.normalize(k_pooled.detach(), dim=1))
