from .dense_projection_neck import DenseProjectionNeck

__all__ = ['DenseProjectionNeck']
