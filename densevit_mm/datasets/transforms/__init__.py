from .deferred_photometric import DeferredPhotometric
from .geometry_views import DeferredResizedCrop, MultiViewWithGeometry, RandomResizedCropWithBox

__all__ = ['DeferredPhotometric', 'DeferredResizedCrop', 'MultiViewWithGeometry',
           'RandomResizedCropWithBox']
