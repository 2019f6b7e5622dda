# UperNet on a DenseViT-S pyramid, MAE / BEiT's ADE20K recipe in mmseg: features of layers
# 3, 5, 7, 11 rescaled x4, x2, x1, x0.5 (mmseg's Feature2Pyramid), UperHead + FCN auxiliary.
_base_ = ['mmseg::_base_/models/upernet_mae.py']

custom_imports = dict(imports=['densevit_mm', 'densevit_mm.downstream'],
                      allow_failed_imports=False)

# The pretraining checkpoint (or a backbone-only / converted file); every backbone key must
# match.  Override: --cfg-options model.backbone.init_cfg.checkpoint=PATH
checkpoint = 'work_dirs/densevit_s/epoch_200.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        type='mmpretrain.DenseViT',
        arch='densevit-s',
        img_size=512,  # the 14x14 position embedding is resized to 32x32 on load
        out_type='featmap',
        out_indices=(3, 5, 7, 11),
        drop_path_rate=0.1,
        init_cfg=dict(type='Pretrained', checkpoint=checkpoint, prefix='backbone.')),
    neck=dict(embed_dim=384, rescales=[4, 2, 1, 0.5]),
    decode_head=dict(in_channels=[384, 384, 384, 384], channels=512, num_classes=150),
    auxiliary_head=dict(in_channels=384, num_classes=150),
    test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))
