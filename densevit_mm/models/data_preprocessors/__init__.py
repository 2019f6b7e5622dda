from .photometric_data_preprocessor import PhotometricDataPreprocessor

__all__ = ['PhotometricDataPreprocessor']
