from .device_augment_data_preprocessor import DeviceAugmentDataPreprocessor
from .photometric_data_preprocessor import PhotometricDataPreprocessor

__all__ = ['DeviceAugmentDataPreprocessor', 'PhotometricDataPreprocessor']
