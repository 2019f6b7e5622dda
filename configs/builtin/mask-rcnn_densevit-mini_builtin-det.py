# Built-in benchmark, detection + instance segmentation: the Mask R-CNN (ViTDet design) config
# (../detection/mask-rcnn_densevit-s_simplefpn_8xb2-1x_coco.py) on the generated COCO-layout set
# data/builtin/coco (64 labelled training images), 128 pixels, mini backbone, anchors halved
# for the small objects.  Random init: --cfg-options model.backbone.init_cfg=None
_base_ = ['../detection/mask-rcnn_densevit-s_simplefpn_8xb2-1x_coco.py']

mini_arch = dict(_delete_=True, embed_dims=192, num_layers=4, num_heads=3,
                 feedforward_channels=768)
checkpoint = 'work_dirs/builtin/pretrain_densevit/epoch_8.pth'  # where run_benchmark puts it
classes = ('disc', 'box', 'triangle', 'ring')
data_root = 'data/builtin/coco/'

model = dict(
    backbone=dict(arch=mini_arch, img_size=128, out_indices=(3,), window_size=4,
                  global_attn_indexes=(1, 3), init_cfg=dict(checkpoint=checkpoint)),
    neck=dict(in_channels=192, out_channels=128),
    rpn_head=dict(in_channels=128, feat_channels=128,
                  anchor_generator=dict(scales=[4])),  # 16-256 px anchors
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128),
        bbox_head=dict(in_channels=128, conv_out_channels=64, fc_out_channels=256,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=128),
        mask_head=dict(in_channels=128, conv_out_channels=64, num_classes=len(classes))),
    # a few objects per 128-pixel image: far fewer proposals and RoIs than COCO needs
    train_cfg=dict(rpn_proposal=dict(nms_pre=500, max_per_img=200),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=200)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomResize', scale=(128, 128), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=(128, 128), recompute_bbox=True,
         allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(1, 1)),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 128), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=8, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes),
                 filter_cfg=dict(filter_empty_gt=True, min_size=4), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=dict(classes=classes), pipeline=test_pipeline))
test_dataloader = val_dataloader
# AP 0, not a missing metric, when a head detects nothing (mmdet's metric would log none)
val_evaluator = dict(type='ZeroAwareCocoMetric',
                     ann_file=data_root + 'annotations/instances_val2017.json')
test_evaluator = val_evaluator

max_iters = 120  # as the main job (tools/run_benchmark.py), so the step at 80% falls inside
optim_wrapper = dict(optimizer=dict(lr=4e-4), paramwise_cfg=dict(num_layers=4))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=30),
    dict(type='MultiStepLR', by_epoch=False, begin=0, end=max_iters,
         milestones=[int(max_iters * 0.8)], gamma=0.1),
]
train_cfg = dict(_delete_=True, type='mmpretrain.ResumableIterBasedTrainLoop',
                 max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=25),
    checkpoint=dict(by_epoch=False, interval=max_iters,
                    max_keep_ckpts=1),
    visualization=dict(type='DetVisualizationHook', draw=False))
log_processor = dict(by_epoch=False)
