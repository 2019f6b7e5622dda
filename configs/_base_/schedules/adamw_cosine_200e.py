# AdamW with linear warm-up and cosine decay, MoCo v3 ViT's recipe (lr 1.5e-4 x batch / 256,
# wd 0.1), over DenseCL's 200 epochs.
# GuardedOptimWrapper skips (and logs) a step with nan / inf loss or gradients and stops the
# run after 20 in a row; DenseViTSelfSup needs it (its queues take only applied steps' keys).
optim_wrapper = dict(
    type='GuardedOptimWrapper',
    max_consecutive_skips=20,
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.1),
    paramwise_cfg=dict(
        norm_decay_mult=0.,
        bias_decay_mult=0.,
        custom_keys={'pos_embed': dict(decay_mult=0.), 'cls_token': dict(decay_mult=0.)}))

param_scheduler = [
    dict(type='LinearLR', start_factor=1e-4, by_epoch=True, begin=0, end=20,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', T_max=180, eta_min=1e-6, by_epoch=True, begin=20, end=200,
         convert_to_iter_based=True),
]

train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=200)

# lr above is for 8 GPUs x 64 images; --auto-scale-lr rescales it for other batch sizes.
auto_scale_lr = dict(base_batch_size=512)
