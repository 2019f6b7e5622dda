# DenseViT-S pretraining with the whole augmentation in the data workers (decode, crop and
# resize, colour jitter, grayscale, blur, flip per image): the same views as densevit_s.py,
# whose GPU makes them from decoded images.  Faster without a GPU; on one it needs about five
# times the worker cores (tools/benchmark_data.py).
#   tools/dist_train.sh configs/pretrain/densevit_s_worker-augment.py 8
_base_ = ['./densevit_s.py']

data_preprocessor = dict(type='SelfSupDataPreprocessor')
train_dataloader = dict(collate_fn=dict(type='default_collate'),
                        dataset=dict(pipeline={{_base_.train_pipeline}}))
