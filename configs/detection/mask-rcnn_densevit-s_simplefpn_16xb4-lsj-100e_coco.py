# COCO, Mask R-CNN (ViTDet design) on DenseViT-S with ViTDet's large-scale-jitter schedule
# (mmdet projects/ViTDet, vitdet_mask-rcnn_vit-b-mae_lsj-100e): 1024x1024 LSJ (scale 0.1-2.0),
# 100 epochs = 184,375 iterations of 64 images (16 GPUs x 4), AdamW lr 1e-4 wd 0.1, layer
# decay 0.7, 250 warm-up iterations, lr x0.1 at 163,889 and 177,546.
#   tools/dist_train.sh configs/detection/mask-rcnn_densevit-s_simplefpn_16xb4-lsj-100e_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/densevit_s/epoch_200.pth
# Model and optimiser as the 1x config; data and schedule replaced.
_base_ = ['./mask-rcnn_densevit-s_simplefpn_8xb2-1x_coco.py']

image_size = (1024, 1024)
model = dict(
    data_preprocessor=dict(
        batch_augments=[dict(type='BatchFixedSizePad', size=image_size, pad_mask=True)]))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomResize', scale=image_size, ratio_range=(0.1, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_type='absolute_range', crop_size=image_size,
         recompute_bbox=True, allow_negative_crop=True),
    dict(type='FilterAnnotations', min_gt_bbox_wh=(0.01, 0.01)),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=image_size, keep_ratio=True),
    dict(type='Pad', size=image_size, pad_val=dict(img=(114, 114, 114))),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4,
    num_workers=8,
    batch_sampler=None,
    dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader

max_iters = 184375
# resumes by skipping the batches done, by index (mmengine's loop would load them again)
train_cfg = dict(_delete_=True, type='mmpretrain.ResumableIterBasedTrainLoop',
                 max_iters=max_iters, val_interval=5000,
                 dynamic_intervals=[(max_iters - 4374, max_iters)])
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=max_iters, by_epoch=False,
         milestones=[163889, 177546], gamma=0.1),
]
default_hooks = dict(
    logger=dict(type='LoggerHook', interval=50),
    checkpoint=dict(by_epoch=False, interval=5000, save_last=True, max_keep_ckpts=3))
log_processor = dict(type='LogProcessor', window_size=50, by_epoch=False)
auto_scale_lr = dict(enable=False, base_batch_size=64)
