from .geometry_views import MultiViewWithGeometry, RandomResizedCropWithBox

__all__ = ['MultiViewWithGeometry', 'RandomResizedCropWithBox']
