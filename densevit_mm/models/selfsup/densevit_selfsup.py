"""The DenseViT pretraining algorithm: DenseCL on a Vision Transformer."""
from typing import Dict, List, Optional

import torch
import torch.nn as nn
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample
from torch.profiler import record_function

from densevit_mm.evaluation import correspondence_accuracy, hub_share
from ..losses import DenseContrastiveLoss, MemoryQueue
from .key_encoder_ema import KeyEncoderEMA


@MODELS.register_module()
class DenseViTSelfSup(BaseSelfSupervisor):
    """Dense contrastive pretraining of a ViT (DenseCL, Wang et al., CVPR 2021).

    The query view goes through the online backbone and neck; the key view through a
    momentum (EMA) copy of both.  The global term contrasts CLS projections, the dense term
    every patch projection with its best-matching key patch; the backbone features of the
    two views decide the match (:meth:`match_patches`, in float32 under any autocast,
    logged with its ``hub_share``).  Unlike DenseCL's ResNet, a ViT has no BatchNorm, so the
    keys need no batch shuffle across GPUs (as in MoCo v3).

    The losses write their keys into the queues in the forward pass.  In training they
    must be staged, so that only the keys of applied steps reach the queues:
    ``GuardedOptimWrapper`` does it on every path (one process, or
    ``MMDistributedDataParallel``, which never calls this model's ``train_step``), and
    :meth:`loss` refuses to train without it.

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
        self.target_encoder = KeyEncoderEMA(
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

    def loss(self, inputs: List[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """Losses of one batch of two views, already weighted by ``(1 - lambda)`` / ``lambda``.

        Args:
            inputs (list[Tensor]): Two views, each ``(B, 3, H, W)``.
            data_samples (list[DataSample]): Read only for ``view_geometry``, which
                ``MultiViewWithGeometry`` adds.

        Returns:
            dict: ``loss_global``, ``loss_dense`` (with a dense term; both weighted by
            ``loss_lambda``), and only logged: ``infonce_global`` / ``infonce_dense`` (the
            same terms unweighted), ``hub_share``, ``corr_acc`` (with view geometry).
        """
        if not isinstance(inputs, (list, tuple)) or len(inputs) != 2:
            raise ValueError('DenseViTSelfSup needs two views per image: use a MultiView '
                             'transform with num_views=2 in the data pipeline.')
        if self.training and not all(m.staging for m in self.modules()
                                     if isinstance(m, MemoryQueue)):
            raise TypeError('DenseViTSelfSup trains with GuardedOptimWrapper or '
                            'GuardedAmpOptimWrapper, which hold back the keys of each step until '
                            'the step is applied; without them a step with non-finite values or '
                            'a float16 overflow would write its keys into the queues. Set '
                            "optim_wrapper.type='GuardedOptimWrapper' (tools/train.py --amp "
                            'turns it into GuardedAmpOptimWrapper); outside training, call '
                            'model.eval() first.')
        view_q, view_k = inputs
        # profiler ranges: tools/benchmark_pretrain.py reads the step's parts from them
        with record_function('backbone'):
            q_out = self.backbone(view_q)
        with record_function('neck'):
            q_global, q_dense, _ = self.neck(q_out)

        with torch.no_grad():
            with record_function('EMA'):
                self.target_encoder.update_parameters(nn.Sequential(self.backbone, self.neck))
            with record_function('key encoder'):
                key_backbone, key_neck = self.target_encoder.module
                k_out = key_backbone(view_k)
                k_global, k_dense, k_pooled = key_neck(k_out)

        geometry = data_samples and 'view_geometry' in data_samples[0]
        match = None  # computed once, for the loss and the diagnostics
        if self.head.loss_dense is not None or geometry:
            with record_function('correspondence'):
                match = self.match_patches(q_out, k_out)  # (B, N)
        losses = self.head.loss(q_global, k_global, q_dense, k_dense, k_pooled,
                                q_out[self._match_output][1], k_out[self._match_output][1],
                                match=match)
        out = dict(loss_global=(1 - self.loss_lambda) * losses['loss_global'])
        if 'loss_dense' in losses:
            out['loss_dense'] = self.loss_lambda * losses['loss_dense']
        # the terms before their weights, only logged (no 'loss' in the name: not summed), so
        # that a curve shows what learned, not the weights' schedule
        out.update({f'infonce_{name[5:]}': value.detach() for name, value in losses.items()})
        if match is not None:
            out['hub_share'] = hub_share(match, k_out[-1][1].shape[1])
        if geometry:
            out['corr_acc'] = self._correspondence_accuracy(view_q, match, data_samples)
        return out

    @torch.no_grad()
    def match_patches(self, q_out: tuple, k_out: tuple) -> torch.Tensor:
        """The dense positives: for each query patch, the most cosine-similar key patch,
        decided in float32 whatever the autocast.

        Args:
            q_out, k_out (tuple): Backbone outputs of the query and the key view, one
                ``(cls (B, C), patch (B, N, C))`` pair per output layer.

        Returns:
            Tensor: long ``(B, N)``, decided by the ``match_layer`` tokens, centred per view
            with ``match_centering``.
        """
        q_patch = q_out[self._match_output][1].float()  # (B, N, C)
        k_patch = k_out[self._match_output][1].float()
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
        # non_blocking: a plain copy to a GPU would wait for every kernel queued so far
        geometry = geometry.to(match.device, torch.float32, non_blocking=True)  # (B, 2, 7)
        grid = tuple(s // self.backbone.patch_size for s in view_q.shape[-2:])
        return correspondence_accuracy(match, geometry[:, 0], geometry[:, 1], grid)
