# ADE20K with Semantic FPN on DenseViT-S: the cheaper protocol SelfPatch reports (Yun et al.,
# CVPR 2022; configs/semfpn_vit-s16_512x512_40k_ade20k.py of github.com/alinlab/SelfPatch,
# settings adopted from XCiT): features of blocks 2, 5, 8, 11 rescaled x4, x2, x1, x0.5, an FPN
# of 256 channels and FPNHead; 512x512 crops, 40k iterations, 4 images per GPU (the GPU count
# is not stated there; 4 GPUs = 16 images, as mmseg's sem_fpn ADE20K configs), AdamW lr 6e-5,
# wd 0.01, 1500 linear warm-up iterations then poly decay, whole-image test.
#   tools/dist_train.sh configs/segmentation/fpn_densevit-s_4xb4-40k_ade20k-512x512.py 4 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/densevit_s/epoch_200.pth
_base_ = [
    'mmseg::_base_/models/fpn_r50.py',
    'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_40k.py',
]

custom_imports = dict(imports=['densevit_mm'], allow_failed_imports=False)
checkpoint = 'work_dirs/densevit_s/epoch_200.pth'
crop_size = (512, 512)
norm_cfg = dict(type='SyncBN', requires_grad=True)

model = dict(
    pretrained=None,
    data_preprocessor=dict(size=crop_size),
    backbone=dict(
        _delete_=True,
        type='mmpretrain.DenseViT',
        arch='densevit-s',
        img_size=512,
        out_type='featmap',
        out_indices=(2, 5, 8, 11),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    # mmengine builds a list of necks as one nn.Sequential: ViT maps -> pyramid -> FPN
    neck=[
        dict(type='Feature2Pyramid', embed_dim=384, rescales=[4, 2, 1, 0.5],
             norm_cfg=norm_cfg),
        dict(type='FPN', in_channels=[384, 384, 384, 384], out_channels=256, num_outs=4),
    ],
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='mmpretrain.GuardedOptimWrapper',  # skips steps with nan / inf loss or gradients
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.), 'cls_token': dict(decay_mult=0.)}))

# resumes by skipping the batches done, by index (mmengine's loop would load them again)
train_cfg = dict(type='mmpretrain.ResumableIterBasedTrainLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=1500, end=40000),
]

train_dataloader = dict(batch_size=4)
val_dataloader = dict(batch_size=1)
test_dataloader = val_dataloader
auto_scale_lr = dict(enable=False, base_batch_size=16)
# checkpoints written atomically, never with nan weights, and on SIGTERM (preemption) at once
default_hooks = dict(checkpoint=dict(type='mmpretrain.CrashSafeCheckpointHook'))
