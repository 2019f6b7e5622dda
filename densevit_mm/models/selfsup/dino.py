"""DINO (Caron et al., ICCV 2021): a multi-crop student distilled from its own EMA teacher.

Written from the equations of the official code (github.com/facebookresearch/dino,
``main_dino.py``: ``DINOLoss``, ``train_one_epoch``; ``vision_transformer.py``: ``DINOHead``).
"""
import math
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from mmengine.dist import all_reduce, get_world_size
from mmengine.logging import MessageHub
from mmengine.model import BaseModule
from mmpretrain.models.selfsup import BaseSelfSupervisor
from mmpretrain.registry import MODELS
from mmpretrain.structures import DataSample


def runtime_info(name: str) -> int:
    """``epoch``, ``iter`` or ``max_iters`` of the running mmengine Runner (its message hub)."""
    value = MessageHub.get_current_instance().get_info(name)
    if value is None:
        raise RuntimeError(f'the message hub has no {name!r}: train under an mmengine Runner, '
                           f"or set it with MessageHub.get_current_instance().update_info("
                           f"{name!r}, value)")
    return int(value)


@MODELS.register_module()
class DINONeck(BaseModule):
    """DINO's projection head: an MLP down to an L2-normalised bottleneck, then a
    weight-normalised linear layer to ``out_channels`` prototypes.  Applied to the last
    dimension, so it takes CLS tokens ``(B, C)`` and patch tokens ``(B, N, C)`` alike.

    Args:
        in_channels (int): Backbone width.
        out_channels (int): Number of prototypes K (65536 in DINO, 8192 in iBOT).
        hid_channels (int): Hidden width of the MLP. Defaults to 2048.
        bottleneck_channels (int): Width before the last layer. Defaults to 256.
        num_layers (int): Linear layers in the MLP (GELU between them). Defaults to 3.
        norm_last_layer (bool): Hold the last layer's weight-norm gain at 1 (DINO's default);
            False learns it, as the ViT-S recipes of DINO and iBOT do. Defaults to True.
        init_cfg (dict, optional): Defaults to truncated normal (std 0.02) for the MLP, as
            the official ``DINOHead``; the last layer keeps PyTorch's ``nn.Linear`` default.
    """

    def __init__(self,
                 in_channels: int,
                 out_channels: int,
                 hid_channels: int = 2048,
                 bottleneck_channels: int = 256,
                 num_layers: int = 3,
                 norm_last_layer: bool = True,
                 init_cfg: Optional[dict] = None) -> None:
        if num_layers < 1:
            raise ValueError(f'num_layers must be at least 1, got {num_layers}')
        if init_cfg is None:
            init_cfg = dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.)
        super().__init__(init_cfg=init_cfg)
        widths = [in_channels] + [hid_channels] * (num_layers - 1) + [bottleneck_channels]
        layers = []
        for i in range(num_layers):
            layers.append(nn.Linear(widths[i], widths[i + 1]))
            if i < num_layers - 1:
                layers.append(nn.GELU())
        self.mlp = nn.Sequential(*layers)
        # weight norm, w = g * v / |v| per output row, kept as plain parameters (no
        # nn.utils.weight_norm hooks): the init_cfg above leaves v at nn.Linear's default
        v = nn.Linear(bottleneck_channels, out_channels, bias=False).weight.detach()
        self.last_layer_v = nn.Parameter(v.clone())  # (K, D)
        self.last_layer_g = (None if norm_last_layer
                             else nn.Parameter(torch.ones(out_channels, 1)))  # (K, 1)

    def forward(self, x: torch.Tensor, freeze_last_layer: bool = False) -> torch.Tensor:
        """``(..., in_channels)`` -> ``(..., out_channels)``.  With ``freeze_last_layer`` the
        last layer gets a zero gradient (DINO leaves it untrained in the first epoch)."""
        x = F.normalize(self.mlp(x), dim=-1)  # (..., D)
        v, g = self.last_layer_v, self.last_layer_g
        if freeze_last_layer:
            # zero, not absent, gradients: every rank's DDP reducer sees the same parameters
            v = v.detach() + 0 * v
            g = None if g is None else g.detach() + 0 * g
        weight = F.normalize(v, dim=1)  # (K, D), unit rows
        if g is not None:
            weight = g * weight
        return F.linear(x, weight)


def teacher_temperature(epoch: int, temp: float, warmup_temp: float, warmup_epochs: int) -> float:
    """The official schedule: ``linspace(warmup_temp, temp, warmup_epochs)`` over the first
    ``warmup_epochs`` epochs, then ``temp``."""
    if epoch >= warmup_epochs:
        return temp
    if warmup_epochs == 1:
        return warmup_temp
    return warmup_temp + (temp - warmup_temp) * epoch / (warmup_epochs - 1)


@MODELS.register_module()
class DINOLoss(BaseModule):
    """Cross-entropy from the centred, sharpened teacher to the student, over every
    (teacher global view, student view) pair of different views.

    ``H(t, s) = -sum_k softmax((t - c) / T_t)_k * log softmax(s / T_s)_k``, averaged over the
    batch, then over the pairs; afterwards the centre ``c`` moves to
    ``m * c + (1 - m) * mean(teacher outputs)`` (mean over all ranks' batches).

    Args:
        out_channels (int): Number of prototypes K.
        student_temp (float): T_s. Defaults to 0.1.
        teacher_temp (float): T_t after the warm-up. Defaults to 0.07 (DINO's ViT-S recipe).
        warmup_teacher_temp (float): T_t at epoch 0. Defaults to 0.04.
        warmup_teacher_temp_epochs (int): Epochs of the linear warm-up. Defaults to 30.
        center_momentum (float): m. Defaults to 0.9.
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 out_channels: int,
                 student_temp: float = 0.1,
                 teacher_temp: float = 0.07,
                 warmup_teacher_temp: float = 0.04,
                 warmup_teacher_temp_epochs: int = 30,
                 center_momentum: float = 0.9,
                 init_cfg: Optional[dict] = None) -> None:
        if min(student_temp, teacher_temp, warmup_teacher_temp) <= 0:
            raise ValueError('temperatures must be positive, got student_temp='
                             f'{student_temp}, teacher_temp={teacher_temp}, '
                             f'warmup_teacher_temp={warmup_teacher_temp}')
        if not 0 <= center_momentum < 1:
            raise ValueError(f'center_momentum must be in [0, 1), got {center_momentum}')
        super().__init__(init_cfg=init_cfg)
        self.student_temp = student_temp
        self.teacher_temp = teacher_temp
        self.warmup_teacher_temp = warmup_teacher_temp
        self.warmup_teacher_temp_epochs = warmup_teacher_temp_epochs
        self.center_momentum = center_momentum
        self.register_buffer('center', torch.zeros(1, out_channels))

    def teacher_temp_at(self, epoch: int) -> float:
        return teacher_temperature(epoch, self.teacher_temp, self.warmup_teacher_temp,
                                   self.warmup_teacher_temp_epochs)

    def forward(self, student: torch.Tensor, teacher: torch.Tensor,
                epoch: int) -> torch.Tensor:
        """The loss, then the centre update.

        Args:
            student (Tensor): ``(V, B, K)``, all V crops; the first ``G`` are the global ones.
            teacher (Tensor): ``(G, B, K)``, the global crops.
            epoch (int): Picks the teacher temperature.
        """
        num_global = teacher.shape[0]
        if student.shape[0] < 2 or num_global > student.shape[0]:
            raise ValueError(f'{student.shape[0]} student and {num_global} teacher views: '
                             'the teacher sees the first views of the student, at least 2 in all')
        targets = F.softmax((teacher - self.center) / self.teacher_temp_at(epoch), dim=-1)
        log_probs = F.log_softmax(student / self.student_temp, dim=-1)  # (V, B, K)
        # (G, V): the batch-mean cross-entropy of every teacher / student view pair
        pair_ce = -torch.einsum('gbk,vbk->gv', targets.detach(), log_probs) / student.shape[1]
        not_same = ~torch.eye(num_global, student.shape[0], dtype=torch.bool,
                              device=student.device)
        loss = pair_ce[not_same].mean()
        self.update_center(teacher.flatten(0, 1))
        return loss

    @torch.no_grad()
    def update_center(self, teacher: torch.Tensor) -> None:
        """EMA of the mean teacher output ``(N, K)`` over all ranks' batches."""
        batch_center = teacher.to(self.center.dtype).mean(dim=0, keepdim=True)  # (1, K)
        if get_world_size() > 1:
            all_reduce(batch_center, op='mean')
        self.center.mul_(self.center_momentum).add_(batch_center, alpha=1 - self.center_momentum)


@MODELS.register_module()
class DINO(BaseSelfSupervisor):
    """DINO self-distillation with multi-crop, on a ViT that returns ``(cls, patch)`` pairs.

    The student (``student.backbone``, ``student.neck``) sees every crop; the teacher
    (``backbone``, ``neck``) only the global ones and is an EMA of the student.  The teacher
    is what DINO evaluates, so it sits where a checkpoint's backbone is looked for
    (``backbone.``): transfer configs load it with ``init_cfg.checkpoint`` as they load any
    pretraining; ``extract_feat`` runs it too.

    Args:
        backbone (dict): The student's backbone config (``DenseViT``, ``out_type=
            'cls_and_patch'``); the teacher is built from it without stochastic depth
            (``drop_path_rate=0``), as in the official code.
        neck (dict): A ``DINONeck`` config; the teacher has its own copy.
        head (dict): A ``DINOLoss`` config.
        momentum (float): EMA weight of the student at the start (mmengine's convention,
            as ``CosineEMA``): the teacher's m = 1 - momentum, 0.996 for the default 0.004.
        end_momentum (float): Student weight at the end of training, reached by a cosine
            over all iterations (DINO: teacher m 0.996 -> 1). Defaults to 0.
        freeze_last_layer (int): Epochs in which the last layer of the student's neck gets
            no gradient. Defaults to 1.
        data_preprocessor (dict, optional): Defaults to ``SelfSupDataPreprocessor``.
        init_cfg (dict, optional): Defaults to None.
    """

    def __init__(self,
                 backbone: dict,
                 neck: dict,
                 head: dict,
                 momentum: float = 0.004,
                 end_momentum: float = 0.,
                 freeze_last_layer: int = 1,
                 data_preprocessor: Optional[dict] = None,
                 init_cfg: Optional[dict] = None) -> None:
        if not (0 <= momentum <= 1 and 0 <= end_momentum <= 1):
            raise ValueError(f'momentum and end_momentum are the student weights per update '
                             f'(teacher m = 1 - momentum), in [0, 1]; got {momentum}, '
                             f'{end_momentum}')
        super().__init__(backbone=dict(backbone, drop_path_rate=0.), neck=neck, head=head,
                         data_preprocessor=data_preprocessor, init_cfg=init_cfg)
        self.student = nn.ModuleDict(dict(backbone=MODELS.build(backbone),
                                          neck=MODELS.build(neck)))
        self.backbone.requires_grad_(False)
        self.neck.requires_grad_(False)
        self.momentum = momentum
        self.end_momentum = end_momentum
        self.freeze_last_layer = freeze_last_layer

    def init_weights(self) -> None:
        super().init_weights()
        self._teacher_from_student(1.)  # the teacher starts as a copy of the student

    def _pairs(self) -> List[tuple]:
        """(teacher tensor, student tensor) for every parameter and buffer, by name."""
        pairs = []
        for name in ('backbone', 'neck'):
            teacher, student = getattr(self, name), self.student[name]
            student_state = dict(student.named_parameters())
            student_state.update(student.named_buffers())
            for key, value in list(teacher.named_parameters()) + list(teacher.named_buffers()):
                if key not in student_state:
                    raise KeyError(f'teacher {name}.{key} has no student counterpart')
                pairs.append((value, student_state[key]))
        return pairs

    @torch.no_grad()
    def _teacher_from_student(self, weight: float) -> None:
        """teacher = (1 - weight) * teacher + weight * student (buffers: copied)."""
        pairs = self._pairs()
        floats = [(t, s) for t, s in pairs if t.dtype.is_floating_point and weight != 1.]
        if floats:
            torch._foreach_lerp_([t.data for t, _ in floats], [s.data for _, s in floats], weight)
        for t, s in pairs:
            if not (t.dtype.is_floating_point and weight != 1.):
                t.data.copy_(s.data)

    def student_weight(self, it: int, max_iters: int) -> float:
        """The EMA's student weight after iteration ``it`` (0-based) of ``max_iters``: the
        official ``1 - cosine_scheduler(0.996, 1, ...)[it]``."""
        cosine = (1 + math.cos(math.pi * it / max_iters)) / 2
        return self.end_momentum - (self.end_momentum - self.momentum) * cosine

    def update_teacher(self) -> None:
        """At the start of iteration ``it`` > 0, apply the EMA step the official code takes
        at the end of iteration ``it - 1`` (with that iteration's momentum): the same
        teacher, computed where every path (one process or DDP) passes."""
        it = runtime_info('iter')
        if it > 0:
            self._teacher_from_student(self.student_weight(it - 1, runtime_info('max_iters')))

    def check_views(self, inputs: Sequence[torch.Tensor]) -> int:
        """The number of global views (the leading views of the first view's size)."""
        if not isinstance(inputs, (list, tuple)) or len(inputs) < 2:
            raise ValueError(f'{type(self).__name__} needs at least two views per image: use '
                             'MultiView with two global pipelines (and local ones after them)')
        size = inputs[0].shape[-2:]
        num_global = next((i for i, v in enumerate(inputs) if v.shape[-2:] != size), len(inputs))
        if num_global != 2 or any(v.shape[-2:] == size for v in inputs[num_global:]):
            raise ValueError('expected two global views first, then local views of another '
                             f'size; got sizes {[tuple(v.shape[-2:]) for v in inputs]}')
        return num_global

    def loss(self, inputs: List[torch.Tensor], data_samples: List[DataSample],
             **kwargs) -> Dict[str, torch.Tensor]:
        """``loss_cls``, the [CLS] self-distillation term, and ``teacher_temp`` (logged).

        Args:
            inputs (list[Tensor]): Two global views ``(B, 3, H, W)``, then local views
                ``(B, 3, h, w)``.
            data_samples (list[DataSample]): Unused.
        """
        num_global = self.check_views(inputs)
        epoch = runtime_info('epoch')
        self.update_teacher()
        with torch.no_grad():
            teacher_cls = self.backbone(torch.cat(inputs[:num_global]))[-1][0]  # (G*B, C)
            teacher = self.neck(teacher_cls)  # (G*B, K)
        frozen = epoch < self.freeze_last_layer
        student = [self.student.neck(self.student.backbone(torch.cat(group))[-1][0],
                                     freeze_last_layer=frozen)  # (n*B, K)
                   for group in (inputs[:num_global], inputs[num_global:]) if group]
        batch = inputs[0].shape[0]
        student = torch.cat(student).view(len(inputs), batch, -1)  # (V, B, K)
        loss = self.head(student, teacher.view(num_global, batch, -1), epoch)
        temp = self.head.teacher_temp_at(epoch)
        return dict(loss_cls=loss, teacher_temp=loss.new_tensor(temp))
