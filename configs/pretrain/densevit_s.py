# DenseViT-S pretraining on ImageNet-1k: 8 GPUs x 64 images, 200 epochs.
#   tools/dist_train.sh configs/pretrain/densevit_s.py 8
_base_ = [
    '../_base_/models/densevit_selfsup.py',
    '../_base_/datasets/imagenet_densecl_twoview.py',
    '../_base_/schedules/adamw_cosine_200e.py',
    '../_base_/default_runtime.py',
]

model = dict(
    backbone=dict(arch='densevit-s'),
    neck=dict(in_channels=384))

# The workers decode and draw the augmentation; the GPU makes the views (crop and resize,
# flip, colour jitter, grayscale, blur) for the whole batch: the same pixels as the per-image
# pipeline, bit for bit (docs/device_augmentation.md).  Without a GPU the per-image pipeline
# is faster: ./densevit_s_worker-augment.py.
data_preprocessor = dict(type='DeviceAugmentDataPreprocessor')
train_dataloader = dict(
    collate_fn=dict(type='collate_source_images'),
    dataset=dict(pipeline={{_base_.device_train_pipeline}}))

# logs and counts the unreadable images the data set skips; stops beyond 0.1% of them
default_hooks = dict(unreadable_images=dict(type='UnreadableImageHook', max_share=0.001))
