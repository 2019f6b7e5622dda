# Mask R-CNN on DenseViT-S with ViTDet's design (Li et al., ECCV 2022; mmdet's
# projects/ViTDet, which the mmdet wheel does not ship): no CLS token, windowed attention
# (14x14) in all blocks but 2, 5, 8, 11, a simple feature pyramid from the last map, LN-2d in
# the pyramid and heads, 2-conv RPN, 4conv-1fc box head.  ViTDet's relative position biases
# are left out: they add parameters a DenseViT checkpoint does not have.
_base_ = ['mmdet::_base_/models/mask-rcnn_r50_fpn.py']

custom_imports = dict(imports=['densevit_mm', 'densevit_mm.downstream.detection'],
                      allow_failed_imports=False)

# The pretraining checkpoint (or a backbone-only / converted file); every backbone key must
# match.  Override: --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint = 'work_dirs/densevit_s/epoch_200.pth'
norm_cfg = dict(type='mmpretrain.LN2d', requires_grad=True)

model = dict(
    data_preprocessor=dict(pad_size_divisor=32),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.DenseViT',
        arch='densevit-s',
        img_size=1024,  # the 14x14 position embedding is resized to 64x64 on load
        with_cls_token=False,
        out_type='featmap',
        out_indices=(11,),
        drop_path_rate=0.1,
        window_size=14,
        global_attn_indexes=(2, 5, 8, 11),
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(_delete_=True, type='SimpleFeaturePyramid', in_channels=384, out_channels=256,
              num_outs=5, norm_cfg=norm_cfg),
    rpn_head=dict(num_convs=2),
    roi_head=dict(
        bbox_head=dict(type='Shared4Conv1FCBBoxHead', conv_out_channels=256,
                       norm_cfg=norm_cfg),
        mask_head=dict(norm_cfg=norm_cfg)))

