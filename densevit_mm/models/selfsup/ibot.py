"""iBOT (Zhou et al., ICLR 2022): DINO's [CLS] self-distillation plus masked image modelling
with the EMA teacher as online tokenizer.

Written from the equations of the official code (github.com/bytedance/ibot, ``main_ibot.py``:
``iBOTLoss``, ``train_one_epoch``; ``loader.py``: ``ImageFolderMask``; ``models/head.py``:
``iBOTHead`` with ``shared_head``).
"""
import math
import random
from contextlib import contextmanager
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_world_size
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample

from .dino import DINO, DINOLoss, runtime_info, teacher_temperature


def blockwise_mask(grid: Tuple[int, int], ratio: float,
                   aspect: Tuple[float, float] = (0.3, 1 / 0.3),
                   rng: Optional[random.Random] = None) -> np.ndarray:
    """iBOT's (BEiT's) block-wise mask of a ``grid`` of patches: rectangles of at least
    ``(min(grid) // 3) ** 2`` patches and log-uniform aspect ratio in ``aspect`` are added
    until ``ratio`` of the patches are masked or no rectangle fits; never more than
    ``ratio * H * W`` patches.

    Returns:
        ndarray: bool ``(H, W)``, True where the patch is masked.
    """
    rng = rng or random
    H, W = grid
    log_aspect = (math.log(aspect[0]), math.log(aspect[1]))
    mask = np.zeros((H, W), dtype=bool)
    high = ratio * H * W
    low = (min(H, W) // 3) ** 2
    count = 0
    while count < high:
        budget = high - count
        delta = 0
        for _ in range(10):
            area = rng.uniform(low, budget)
            aspect_ratio = math.exp(rng.uniform(*log_aspect))
            h = int(round(math.sqrt(area * aspect_ratio)))
            w = int(round(math.sqrt(area / aspect_ratio)))
            if w < W and h < H:
                top, left = rng.randint(0, H - h), rng.randint(0, W - w)
                new = h * w - mask[top:top + h, left:left + w].sum()
                if 0 < new <= budget:
                    mask[top:top + h, left:left + w] = True
                    delta = new
                    break
        if delta == 0:
            break
        count += delta
    return mask


def draw_mask_ratio(ratio_range: Tuple[float, float], prob: float,
                    rng: Optional[random.Random] = None) -> float:
    """0 with probability ``1 - prob``, else uniform in ``ratio_range`` (iBOT's
    ``--pred_ratio 0 0.3 --pred_ratio_var 0 0.2``: a choice between 0 and U(0.1, 0.5))."""
    rng = rng or random
    return rng.uniform(*ratio_range) if rng.random() < prob else 0.


@MODELS.register_module()
class iBOTLoss(DINOLoss):
    """DINO's [CLS] loss plus the masked-patch loss: at each masked position of a global
    view, the cross-entropy from the teacher's centred, sharpened patch output of the same,
    unmasked view to the student's; averaged over the masked positions of each image (an
    image without mask adds 0), then the batch, then the global views.  The patch centre
    follows the teacher's patch outputs averaged over positions, then the batch.

    Args:
        out_channels (int): Number of prototypes K (shared by [CLS] and patches).
        teacher_patch_temp (float): Patch teacher temperature after the warm-up.
            Defaults to 0.07.
        warmup_teacher_patch_temp (float): At epoch 0. Defaults to 0.04.
        patch_center_momentum (float): Defaults to 0.9.
        **kwargs: ``DINOLoss``'s arguments (the warm-up epochs are shared).
    """

    def __init__(self,
                 out_channels: int,
                 teacher_patch_temp: float = 0.07,
                 warmup_teacher_patch_temp: float = 0.04,
                 patch_center_momentum: float = 0.9,
                 **kwargs) -> None:
        super().__init__(out_channels, **kwargs)
        if min(teacher_patch_temp, warmup_teacher_patch_temp) <= 0:
            raise ValueError('patch temperatures must be positive, got teacher_patch_temp='
                             f'{teacher_patch_temp}, warmup_teacher_patch_temp='
                             f'{warmup_teacher_patch_temp}')
        if not 0 <= patch_center_momentum < 1:
            raise ValueError(f'patch_center_momentum must be in [0, 1), got '
                             f'{patch_center_momentum}')
        self.teacher_patch_temp = teacher_patch_temp
        self.warmup_teacher_patch_temp = warmup_teacher_patch_temp
        self.patch_center_momentum = patch_center_momentum
        self.register_buffer('patch_center', torch.zeros(1, 1, out_channels))

    def teacher_patch_temp_at(self, epoch: int) -> float:
        return teacher_temperature(epoch, self.teacher_patch_temp,
                                   self.warmup_teacher_patch_temp,
                                   self.warmup_teacher_temp_epochs)

    def forward(self, student_cls: torch.Tensor, student_patch: torch.Tensor,
                teacher_cls: torch.Tensor, teacher_patch: torch.Tensor, mask: torch.Tensor,
                epoch: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """The [CLS] and the patch loss (unweighted), then both centre updates.

        Args:
            student_cls (Tensor): ``(V, B, K)``, all crops, global ones first.
            student_patch (Tensor): ``(G, B, N, K)``, the masked global crops.
            teacher_cls (Tensor): ``(G, B, K)``.
            teacher_patch (Tensor): ``(G, B, N, K)``, the unmasked global crops.
            mask (Tensor): bool ``(G, B, N)``, True where the student's patch was masked.
            epoch (int): Picks the teacher temperatures.
        """
        loss_cls = super().forward(student_cls, teacher_cls, epoch)
        temp = self.teacher_patch_temp_at(epoch)
        targets = F.softmax((teacher_patch - self.patch_center) / temp, dim=-1).detach()
        log_probs = F.log_softmax(student_patch / self.student_temp, dim=-1)  # (G, B, N, K)
        ce = -(targets * log_probs).sum(dim=-1)  # (G, B, N)
        weights = mask.to(ce.dtype)
        per_image = (ce * weights).sum(-1) / weights.sum(-1).clamp(min=1.)  # (G, B)
        loss_patch = per_image.mean()
        self.update_patch_center(teacher_patch)
        return loss_cls, loss_patch

    @torch.no_grad()
    def update_patch_center(self, teacher_patch: torch.Tensor) -> None:
        batch_center = teacher_patch.to(self.patch_center.dtype).mean(dim=-2).flatten(0, -2).mean(
            dim=0).view(1, 1, -1)  # (1, 1, K)
        if get_world_size() > 1:
            all_reduce(batch_center, op='mean')
        self.patch_center.mul_(self.patch_center_momentum).add_(
            batch_center, alpha=1 - self.patch_center_momentum)


@MODELS.register_module()
class iBOT(DINO):
    """iBOT: DINO (see there for the teacher, the EMA and where the teacher is saved) whose
    student also sees its global views with block-wise masked patches, replaced by a
    learned mask token before the position embedding; one ``DINONeck`` serves the [CLS]
    and the patch tokens (``shared_head``).

    Args:
        mask_ratio (tuple[float, float]): Range of the masked share of a masked view.
            Defaults to (0.1, 0.5).
        mask_prob (float): Chance that a global view is masked at all. Defaults to 0.5.
        mask_aspect (tuple[float, float]): Aspect range of the mask's blocks.
            Defaults to (0.3, 1 / 0.3).
        **kwargs: ``DINO``'s arguments, with an ``iBOTLoss`` head.
    """

    def __init__(self,
                 *args,
                 mask_ratio: Tuple[float, float] = (0.1, 0.5),
                 mask_prob: float = 0.5,
                 mask_aspect: Tuple[float, float] = (0.3, 1 / 0.3),
                 **kwargs) -> None:
        if not 0 <= mask_ratio[0] <= mask_ratio[1] <= 1:
            raise ValueError(f'mask_ratio must be a range within [0, 1], got {mask_ratio}')
        if not 0 <= mask_prob <= 1:
            raise ValueError(f'mask_prob must be in [0, 1], got {mask_prob}')
        super().__init__(*args, **kwargs)
        if not isinstance(self.head, iBOTLoss):
            raise TypeError(f'iBOT needs an iBOTLoss head, got {type(self.head).__name__}')
        self.mask_ratio = tuple(mask_ratio)
        self.mask_prob = mask_prob
        self.mask_aspect = tuple(mask_aspect)
        # the student's only parameter outside its backbone, so that a checkpoint's
        # backbone is a plain ViT (the official code keeps it in the backbone, unused there)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, self.backbone.embed_dims))

    def draw_masks(self, num: int, grid: Tuple[int, int], device) -> torch.Tensor:
        """bool ``(num, H * W)`` block-wise masks, one drawn ratio each."""
        masks = [blockwise_mask(grid, draw_mask_ratio(self.mask_ratio, self.mask_prob),
                                self.mask_aspect) for _ in range(num)]
        return torch.from_numpy(np.stack(masks).reshape(num, -1)).to(device)

    @contextmanager
    def masked(self, mask: torch.Tensor):
        """The student backbone's patch embeddings at ``mask`` ``(B, N)`` replaced by the
        mask token, inside the block."""
        def replace(module, args, output):
            tokens, hw = output  # (B, N, C)
            return torch.where(mask[..., None], self.mask_token.to(tokens.dtype), tokens), hw
        handle = self.student.backbone.patch_embed.register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()

    def loss(self, inputs: List[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """``loss_cls`` and ``loss_patch`` (iBOT's lambda1 = lambda2 = 1: summed as they
        are), and the two teacher temperatures (logged)."""
        num_global = self.check_views(inputs)
        epoch = runtime_info('epoch')
        self.update_teacher()
        batch = inputs[0].shape[0]
        views = torch.cat(inputs[:num_global])  # (G*B, 3, H, W)
        patch_size = self.student.backbone.patch_size
        grid = (views.shape[-2] // patch_size, views.shape[-1] // patch_size)
        with torch.no_grad():
            cls, patch = self.backbone(views)[-1]  # (G*B, C), (G*B, N, C)
            teacher = self.neck(torch.cat([cls[:, None], patch], dim=1))  # (G*B, 1 + N, K)
        mask = self.draw_masks(views.shape[0], grid, views.device)  # (G*B, N)
        frozen = epoch < self.freeze_last_layer
        with self.masked(mask):
            cls, patch = self.student.backbone(views)[-1]
        student = self.student.neck(torch.cat([cls[:, None], patch], dim=1),
                                    freeze_last_layer=frozen)  # (G*B, 1 + N, K)
        student_cls = [student[:, 0]]
        if len(inputs) > num_global:
            local_cls = self.student.backbone(torch.cat(inputs[num_global:]))[-1][0]
            student_cls.append(self.student.neck(local_cls, freeze_last_layer=frozen))
        K = student.shape[-1]
        loss_cls, loss_patch = self.head(
            torch.cat(student_cls).view(len(inputs), batch, K),
            student[:, 1:].reshape(num_global, batch, -1, K),
            teacher[:, 0].reshape(num_global, batch, K),
            teacher[:, 1:].reshape(num_global, batch, -1, K),
            mask.view(num_global, batch, -1), epoch)
        return dict(loss_cls=loss_cls, loss_patch=loss_patch,
                    teacher_temp=loss_cls.new_tensor(self.head.teacher_temp_at(epoch)),
                    teacher_patch_temp=loss_cls.new_tensor(self.head.teacher_patch_temp_at(epoch)))
