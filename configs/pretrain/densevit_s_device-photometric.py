# DenseViT-S pretraining with only the photometric augmentation (colour jitter, grayscale,
# blur) batched on the GPU: the data workers decode, crop, resize and flip.  Between
# ./densevit_s_worker-augment.py and densevit_s.py (which moves the crops' resize to the GPU
# too) in worker CPU time (tools/benchmark_data.py).  Same augmentation: same parameter draws
# from the same seeds, same pixels (bit for bit on a CPU, tested).
#   tools/dist_train.sh configs/pretrain/densevit_s_device-photometric.py 8
_base_ = ['./densevit_s.py']

data_preprocessor = dict(type='PhotometricDataPreprocessor')
train_dataloader = dict(collate_fn=dict(type='default_collate'),
                        dataset=dict(pipeline={{_base_.device_photometric_train_pipeline}}))
