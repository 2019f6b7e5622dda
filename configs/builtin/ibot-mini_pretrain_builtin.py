# Built-in benchmark, peer pretraining: iBOT (Zhou et al., ICLR 2022) on the mini ViT of
# densevit-mini_pretrain_builtin.py, 8 epochs of batch 64.  DINO's setup
# (./dino-mini_pretrain_builtin.py: optimiser, schedules, EMA, augmentations) with iBOT's
# changes, from the official ViT-S/16 run (github.com/bytedance/ibot, README: --teacher_temp
# 0.07 --warmup_teacher_temp_epochs 30 --norm_last_layer false --epochs 800
# --batch_size_per_gpu 64 --shared_head true --out_dim 8192 --local_crops_number 10
# --global_crops_scale 0.25 1 --local_crops_scale 0.05 0.25 --pred_ratio 0 0.3
# --pred_ratio_var 0 0.2; main_ibot.py defaults): one head shared by [CLS] and patch
# tokens, masked-patch loss on the teacher's outputs of the unmasked global view, patch
# teacher temperature 0.04 -> 0.07, both centre momenta 0.9, lambda 1 / 1, each global view
# masked block-wise (aspect 0.3 - 3.3) with probability 0.5, at a ratio drawn from
# (0.1, 0.5).
# Scaled down, nothing else changed:
# - 8192 -> 4096 prototypes (as the DINO config: the same head for both peers);
# - 10 -> 4 local crops, 96 -> 48 pixels (global crops 224 -> 96), for cost on 2 CPU cores;
# - schedules to 8 epochs as in the DINO config (lr warm-up 1 epoch; teacher temperature
#   warm-up 30 of 800 epochs -> 1 epoch, the shortest the per-epoch schedule has);
# - weight decay held at 0.04, global-norm clipping: as in the DINO config.
_base_ = ['./dino-mini_pretrain_builtin.py']

out_channels = 4096
model = dict(
    type='iBOT',
    mask_ratio=(0.1, 0.5),
    mask_prob=0.5,
    mask_aspect=(0.3, 1 / 0.3),
    neck=dict(out_channels=out_channels),
    head=dict(type='iBOTLoss', out_channels=out_channels, teacher_patch_temp=0.07,
              warmup_teacher_patch_temp=0.04, patch_center_momentum=0.9))

# DataAugmentationiBOT is DINO's (see there), with iBOT's crop scales
flip_and_color_jitter = [
    dict(type='RandomFlip', prob=0.5),
    dict(
        type='RandomApply',
        transforms=[dict(type='ColorJitter', brightness=0.4, contrast=0.4, saturation=0.2,
                         hue=0.1)],
        prob=0.8),
    dict(type='RandomGrayscale', prob=0.2, keep_channels=True,
         channel_weights=(0.114, 0.587, 0.2989)),
]
blur = dict(type='GaussianBlur', magnitude_range=(0.1, 2.0), magnitude_std='inf')
global_crop = dict(type='RandomResizedCrop', scale=96, crop_ratio_range=(0.25, 1.),
                   interpolation='bicubic', backend='pillow')
local_crop = dict(type='RandomResizedCrop', scale=48, crop_ratio_range=(0.05, 0.25),
                  interpolation='bicubic', backend='pillow')
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='MultiView', num_views=[1, 1, 4], transforms=[
        [global_crop, *flip_and_color_jitter, dict(blur, prob=1.0)],
        [global_crop, *flip_and_color_jitter, dict(blur, prob=0.1),
         dict(type='Solarize', thr=128, prob=0.2)],
        [local_crop, *flip_and_color_jitter, dict(blur, prob=0.5)],
    ]),
    dict(type='PackInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
