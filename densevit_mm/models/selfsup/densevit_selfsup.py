"""The DenseViT pretraining algorithm: DenseCL on a Vision Transformer."""
from typing import Dict, List, Optional, Union

import torch
import torch.nn as nn
from mmengine.model import ExponentialMovingAverage
from mmengine.optim import OptimWrapper
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from densevit_mm.evaluation import correspondence_accuracy, hub_share
from ..losses import DenseContrastiveLoss, MemoryQueue


@MODELS.register_module()
class DenseViTSelfSup(BaseSelfSupervisor):
    """Dense contrastive pretraining of a ViT (DenseCL, Wang et al., CVPR 2021).

    The query view goes through the online backbone and neck; the key view through a
    momentum (EMA) copy of both.  The global term contrasts CLS projections, the dense term
    every patch projection with its best-matching key patch; the backbone features of the
    two views decide the match (:meth:`match_patches`, logged with its ``hub_share``).
    Unlike DenseCL's ResNet, a ViT has no BatchNorm, so the keys need no batch shuffle
    across GPUs (as in MoCo v3).

    Args:
        backbone (dict): Backbone config, a ``DenseViT`` with ``out_type='cls_and_patch'``.
        neck (dict): Neck config, a ``DenseProjectionNeck``.
        head (dict): Head config, a ``DenseContrastiveHead``.
        momentum (float): EMA momentum in **mmengine's convention**: the weight of the
            online model in each update, ``key = (1 - momentum) * key + momentum * online``.
            MoCo's ``m`` is ``1 - momentum``; the default 0.001 is DenseCL's (and MoCo v2's)
            m = 0.999: the queue's keys must come from nearly the same encoder.
        loss_lambda (float): Weight of the dense term; the global term gets
            ``1 - loss_lambda``. Defaults to 0.5 (DenseCL). ``LambdaWarmupHook`` holds it at
            0 for the first iterations.  A head without a dense term (global-only baseline,
            MoCo v3 style) needs ``loss_lambda=0`` and computes no dense projections.
        match_layer (int, optional): Backbone layer whose patch tokens decide the match;
            it must be among the backbone's ``out_indices``.  None (default): the last
            output, as DenseCL.
        match_centering (bool): Subtract each view's mean patch token before the cosine,
            so that the match is decided by what differs between patches rather than by
            the image-level component they share.  Defaults to False (DenseCL's plain
            argmax).
        data_preprocessor (dict, optional): Defaults to ``SelfSupDataPreprocessor``.
        init_cfg (dict | list[dict], optional): Initialisation config. Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 momentum: float = 0.001,
                 loss_lambda: float = 0.5,
                 match_layer: Optional[int] = None,
                 match_centering: bool = False,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if not 0 < momentum <= 1:
            raise ValueError(f'momentum must be in (0, 1] (mmengine convention: the online '
                             f'weight per update, MoCo m = 1 - momentum), got {momentum}')
        if not 0 <= loss_lambda <= 1:
            raise ValueError(f'loss_lambda must be in [0, 1], got {loss_lambda}')
        super().__init__(backbone=backbone, neck=neck, head=head,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        # mmengine's EMA copies the online weights on its first update, so the key encoder
        # starts equal to the query encoder whatever init_weights() did to it.
        self.target_encoder = ExponentialMovingAverage(
            nn.Sequential(self.backbone, self.neck), momentum=momentum)
        if self.head.loss_dense is None and loss_lambda != 0:
            raise ValueError('a head without a dense term (loss_dense=None) is the global-only '
                             f'baseline: set loss_lambda=0, got {loss_lambda}')
        self.loss_lambda = loss_lambda
        self.match_centering = match_centering
        self._match_output = -1  # which backbone output decides the match
        if match_layer is not None:
            layers = list(self.backbone.out_indices)
            layer = match_layer % self.backbone.num_layers
            if layer not in layers:
                raise ValueError(f'match_layer={match_layer} is not among the backbone '
                                 f'out_indices {layers}: add it there')
            self._match_output = layers.index(layer)
            if self._match_output == len(layers) - 1:
                self._match_output = -1

    def train_step(self, data: Union[dict, tuple, list],
                   optim_wrapper: OptimWrapper) -> Dict[str, torch.Tensor]:
        """One training step whose keys reach the queues only if the step is applied.

        The losses write their keys in the forward pass, before anyone knows whether the
        loss and gradients are finite.  Here the writes are staged, and committed after
        :class:`GuardedOptimWrapper` has applied the update -- or dropped with the step it
        skipped (a non-finite loss or gradient, a float16 overflow).  A skipped step logs
        no values (the optimizer wrapper's warning names it); an applied one logs
        ``dropped_keys`` when it refused non-finite key rows.
        """
        if not hasattr(optim_wrapper, 'step_applied'):
            raise TypeError(f'DenseViTSelfSup trains with GuardedOptimWrapper or '
                            f'GuardedAmpOptimWrapper, got {type(optim_wrapper).__name__}: without '
                            'it, a step with non-finite values or a float16 overflow would write '
                            'its keys into the queues. tools/train.py --amp picks the right one.')
        queues = [m for m in self.modules() if isinstance(m, MemoryQueue)]
        for queue in queues:
            queue.stage()
        log_vars = super().train_step(data, optim_wrapper)
        if optim_wrapper.step_applied is None:  # accumulating gradients: keys stay staged
            return log_vars
        if optim_wrapper.step_applied:
            dropped = sum(queue.commit() for queue in queues)
            if dropped:
                log_vars['dropped_keys'] = float(dropped)
            return log_vars
        for queue in queues:
            queue.discard()
        return {}

    def loss(self, inputs: List[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """Losses of one batch of two views, already weighted by ``(1 - lambda)`` / ``lambda``.

        Args:
            inputs (list[Tensor]): Two views, each ``(B, 3, H, W)``.
            data_samples (list[DataSample]): Read only for ``view_geometry``, which
                ``MultiViewWithGeometry`` adds.

        Returns:
            dict: ``loss_global``, ``loss_dense`` (with a dense term) and ``corr_acc`` (with
            view geometry: not a loss, only logged).
        """
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError('DenseViTSelfSup needs two views per image: use a MultiView '
                             'transform with num_views=2 in the data pipeline.')
        view_q, view_k = inputs
        q_out = self.backbone(view_q)
        q_global, q_dense, _ = self.neck(q_out)

        with torch.no_grad():
            self.target_encoder.update_parameters(nn.Sequential(self.backbone, self.neck))
            key_backbone, key_neck = self.target_encoder.module
            k_out = key_backbone(view_k)
            k_global, k_dense, k_pooled = key_neck(k_out)

        geometry = data_samples and 'view_geometry' in data_samples[0]
        match = None  # computed once, for the loss and the diagnostics
        if self.head.loss_dense is not None or geometry:
            match = self.match_patches(q_out, k_out)  # (B, N)
        losses = self.head.loss(q_global, k_global, q_dense, k_dense, k_pooled,
                                q_out[self._match_output][1], k_out[self._match_output][1],
                                match=match)
        out = dict(loss_global=(1 - self.loss_lambda) * losses['loss_global'])
        if 'loss_dense' in losses:
            out['loss_dense'] = self.loss_lambda * losses['loss_dense']
        if match is not None:
            out['hub_share'] = hub_share(match, k_out[-1][1].shape[1])
        if geometry:
            out['corr_acc'] = self._correspondence_accuracy(view_q, match, data_samples)
        return out

    @torch.no_grad()
    def match_patches(self, q_out: tuple, k_out: tuple) -> torch.Tensor:
        """The dense positives: for each query patch, the most cosine-similar key patch.

        Args:
            q_out, k_out (tuple): Backbone outputs of the query and the key view, one
                ``(cls (B, C), patch (B, N, C))`` pair per output layer.

        Returns:
            Tensor: long ``(B, N)``, decided by the ``match_layer`` tokens, centred per view
            with ``match_centering``.
        """
        q_patch, k_patch = q_out[self._match_output][1], k_out[self._match_output][1]
        if self.match_centering:
            q_patch = q_patch - q_patch.mean(dim=1, keepdim=True)  # (B, N, C)
            k_patch = k_patch - k_patch.mean(dim=1, keepdim=True)
        return DenseContrastiveLoss.extract_correspondence(q_patch, k_patch)

    @torch.no_grad()
    def _correspondence_accuracy(self, view_q: torch.Tensor, match: torch.Tensor,
                                 data_samples: List[DataSample]) -> torch.Tensor:
        """Share of the loss's patch matches within one patch of the true geometric match
        (logged as ``corr_acc``; needs ``MultiViewWithGeometry`` in the pipeline)."""
        geometry = torch.stack([torch.as_tensor(s.view_geometry) for s in data_samples])
        geometry = geometry.to(match.device, torch.float32)  # (B, 2, 7)
        grid = tuple(s // self.backbone.patch_size for s in view_q.shape[-2:])
        return correspondence_accuracy(match, geometry[:, 0], geometry[:, 1], grid)
