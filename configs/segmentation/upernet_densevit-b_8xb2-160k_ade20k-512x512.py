# ADE20K, UperNet + DenseViT-B: the DenseViT-S recipe (MAE / BEiT protocol) at ViT-B width.
#   tools/dist_train.sh configs/segmentation/upernet_densevit-b_8xb2-160k_ade20k-512x512.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/densevit_b/epoch_200.pth
_base_ = ['./upernet_densevit-s_8xb2-160k_ade20k-512x512.py']

model = dict(
    backbone=dict(
        arch='densevit-b',
        init_cfg=dict(checkpoint='work_dirs/densevit_b/epoch_200.pth')),
    neck=dict(embed_dim=768),
    decode_head=dict(in_channels=[768, 768, 768, 768], channels=768),
    auxiliary_head=dict(in_channels=768))
