# COCO, Mask R-CNN (ViTDet design) on DenseViT-B: the DenseViT-S config at ViT-B width.
#   tools/dist_train.sh configs/detection/mask-rcnn_densevit-b_simplefpn_16xb4-lsj-100e_coco.py 8 \
#       --cfg-options model.backbone.init_cfg.checkpoint=work_dirs/densevit_b/epoch_200.pth
_base_ = ['./mask-rcnn_densevit-s_simplefpn_16xb4-lsj-100e_coco.py']

model = dict(
    backbone=dict(
        arch='densevit-b',
        init_cfg=dict(checkpoint='work_dirs/densevit_b/epoch_200.pth')),
    neck=dict(in_channels=768))
