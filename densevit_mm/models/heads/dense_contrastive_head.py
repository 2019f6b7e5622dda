"""DenseCL-style head: the global and the dense contrastive terms side by side."""
from typing import Dict, List, Optional, Union

import torch
from mmengine.model import BaseModule
from mmpretrain.registry import MODELS


@MODELS.register_module()
class DenseContrastiveHead(BaseModule):
    """Computes DenseCL's two InfoNCE terms, each against its own queue.

    Args:
        loss_global (dict): Config of the global term. Defaults to a
            ``GlobalContrastiveLoss`` (queue 65536, dim 128, temperature 0.2).
        loss_dense (dict, optional): Config of the dense term. Defaults to a
            ``DenseContrastiveLoss`` (queue 65536, dim 128, temperature 0.2); ``None`` for
            the global-only baseline.
        init_cfg (dict | list[dict], optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 loss_global: dict = dict(type='GlobalContrastiveLoss'),
                 loss_dense: Optional[dict] = dict(type='DenseContrastiveLoss'),
                 init_cfg: Optional[Union[dict, List[dict]]] = None) -> None:
        super().__init__(init_cfg=init_cfg)
        self.loss_global = MODELS.build(loss_global)
        self.loss_dense = None if loss_dense is None else MODELS.build(loss_dense)

    def loss(self, q_global: torch.Tensor, k_global: torch.Tensor, q_dense: torch.Tensor,
             k_dense: torch.Tensor, k_pooled: torch.Tensor, q_backbone: torch.Tensor,
             k_backbone: torch.Tensor, match: Optional[torch.Tensor] = None
             ) -> Dict[str, torch.Tensor]:
        """Unweighted losses; the algorithm applies ``(1 - lambda)`` and ``lambda``.

        Args:
            q_global, k_global (Tensor): ``(B, D)`` global projections of query / key view.
            q_dense, k_dense (Tensor): ``(B, N, D)`` dense projections.
            k_pooled (Tensor): ``(B, D)`` pooled dense keys, written to the dense queue.
            q_backbone, k_backbone (Tensor): ``(B, N, C)`` backbone patch features, which
                decide the correspondence.
            match (Tensor, optional): long ``(B, N)`` correspondence, when the caller has
                it already (see ``DenseContrastiveLoss.forward``).

        Returns:
            dict: ``loss_global`` and, with a dense term, ``loss_dense`` (scalars).
        """
        losses = dict(loss_global=self.loss_global(q_global, k_global))
        if self.loss_dense is not None:
            losses['loss_dense'] = self.loss_dense(q_dense, k_dense, q_backbone, k_backbone,
                                                   k_pooled, match=match)
        return losses
