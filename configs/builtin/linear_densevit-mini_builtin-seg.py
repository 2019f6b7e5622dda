# Built-in benchmark, frozen-feature segmentation: a linear (1x1 conv) classifier on the last
# layer's patch tokens of a frozen backbone, trained on the same data, schedule and crops as
# ./fpn_densevit-mini_builtin-seg.py.  DINOv2 reports this "linear" ADE20K protocol beside
# fine-tuning; here it is the measure that shows what pretraining learned, since 300 iterations
# of full fine-tuning on these scenes relearn the backbone whatever it starts from.
# Random init: --cfg-options model.backbone.init_cfg=None
_base_ = ['./fpn_densevit-mini_builtin-seg.py']

benchmark_column = 'mIoU linear (frozen)'  # tools/benchmark_table.py's column

model = dict(
    backbone=dict(out_indices=(3,), frozen_stages=4),
    neck=None,
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=192,
        in_index=0,
        channels=192,
        num_convs=0,  # conv_seg alone: a linear classifier per patch token
        concat_input=False,
        dropout_ratio=0.,
        num_classes=5,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)))
