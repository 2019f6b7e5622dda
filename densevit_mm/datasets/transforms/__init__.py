from .deferred_photometric import DeferredPhotometric
from .geometry_views import MultiViewWithGeometry, RandomResizedCropWithBox

__all__ = ['DeferredPhotometric', 'MultiViewWithGeometry', 'RandomResizedCropWithBox']
