# DenseViT-S pretraining from tar shards instead of a million files: tools/make_shards.py
# packs data/imagenet/train into data/imagenet_shards/ (~1 GB shards and an index).  Same
# images, order and augmentation as densevit_s.py, with the same exact mid-epoch resume (a run
# begun on the folder continues on its shards with --resume --accept-changes data: the file
# list's names differ).  On a network file system, copy the shards to node-local disk at
# start (once per node, into a folder named by the index's hash):
#   tools/dist_train.sh configs/pretrain/densevit_s_shards.py 8 \
#       --cfg-options train_dataloader.dataset.stage_to=/local/scratch/imagenet_shards
_base_ = ['./densevit_s.py']

train_dataloader = dict(dataset=dict(
    _delete_=True,
    type='UnlabeledImageShards',
    data_root='data/imagenet_shards/',
    skip_unreadable=True,
    pipeline={{_base_.device_train_pipeline}}))
