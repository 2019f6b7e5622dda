# DenseViT-S pretraining with the photometric augmentation (colour jitter, grayscale, blur)
# batched on the GPU: the data workers only decode, crop and flip -- about a third of the CPU
# time per image (tools/benchmark_data.py).  Same augmentation as densevit_s.py: same
# parameter draws from the same seeds, same pixels (bit for bit on a CPU, tested).
#   tools/dist_train.sh configs/pretrain/densevit_s_device-photometric.py 8
_base_ = ['./densevit_s.py']

data_preprocessor = dict(type='PhotometricDataPreprocessor')
train_dataloader = dict(dataset=dict(pipeline={{_base_.device_photometric_train_pipeline}}))
