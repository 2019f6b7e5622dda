# Two views per image with the MoCo v2 / DenseCL augmentation, from any folder of images
# (ImageNet-1k's train/ by default; class sub-folders are searched, labels unused).
# An unreadable image, or one whose header says it has more than the data set's max_pixels
# (default 2**27 = 134.2 MP, densevit_mm/datasets/image_check.py), is skipped
# (UnreadableImageHook, listed in ../../pretrain/densevit_s.py, logs it and stops the run
# when more than 0.1% are); ResumableSampler makes a run resumed mid-epoch see the same
# images and augmentations as an uninterrupted one.
data_root = 'data/imagenet/'
data_preprocessor = dict(
    type='SelfSupDataPreprocessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    to_rgb=True,
    # with pin_memory below: the batch's copy to the GPU does not wait for the last step
    non_blocking=True)

# records the crop box, so the log can show correspondence accuracy (corr_acc)
crop = dict(type='RandomResizedCropWithBox', scale=224, crop_ratio_range=(0.2, 1.),
            backend='pillow')
photometric_transforms = [
    dict(
        type='RandomApply',
        transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.4,
                         hue=0.1)],
        prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.2989)),
    dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf', prob=0.5),
]
flip = dict(type='RandomFlip', prob=0.5)
view_pipeline = [crop, *photometric_transforms, flip]

# Everything in the data workers: decode, crop and resize, photometric ops, flip.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiViewWithGeometry', num_views=2, transforms=[view_pipeline]),
    dict(type='PackInputs', algorithm_keys=['view_geometry']),
]

# The same augmentation with its photometric part batched on the training device: the
# workers decode, crop and flip and draw the photometric parameters (same draws, same seeds);
# PhotometricDataPreprocessor applies them.  Used by
# ../../pretrain/densevit_s_device-photometric.py.
device_photometric_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiViewWithGeometry', num_views=2, transforms=[[
        crop, dict(type='DeferredPhotometric', transforms=photometric_transforms), flip]]),
    dict(type='PackInputs', algorithm_keys=['view_geometry', 'view_photometric']),
]

# The same augmentation with everything per-pixel on the training device, what
# ../../pretrain/densevit_s.py uses: the workers decode and draw every parameter (same draws,
# same seeds); DeviceAugmentDataPreprocessor crops and resizes (Pillow's bilinear, bit for
# bit), flips and applies the photometric ops to the whole batch.  Needs
# collate_fn=dict(type='collate_source_images') and
# data_preprocessor=dict(type='DeviceAugmentDataPreprocessor').
device_train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiViewWithGeometry', num_views=2, transforms=[[
        dict(crop, type='DeferredResizedCrop'),
        dict(type='DeferredPhotometric', transforms=photometric_transforms), flip]]),
    dict(type='PackInputs', algorithm_keys=['view_geometry', 'view_photometric']),
]

train_dataloader = dict(
    batch_size=64,  # per GPU: 8 GPUs x 64 = 512
    # the cores the launcher gives each process, less one (densevit_mm/engine/data_workers.py:
    # SLURM_CPUS_PER_TASK, or the CPU affinity shared by the node's processes)
    num_workers='auto',
    drop_last=True,
    persistent_workers=True,
    pin_memory=True,
    sampler=dict(type='ResumableSampler', shuffle=True),
    collate_fn=dict(type='default_collate'),
    dataset=dict(
        type='UnlabeledImageFolder',
        data_root=data_root,
        data_prefix='train',
        skip_unreadable=True,
        pipeline=train_pipeline))
