from .transforms import MultiViewWithGeometry, RandomResizedCropWithBox
from .synthetic_layouts import BUILTIN_MARKER, write_ade20k_layout, write_coco_layout
from .synthetic_scenes import SHAPES, render_scene, write_image_folder

__all__ = ['BUILTIN_MARKER', 'MultiViewWithGeometry', 'RandomResizedCropWithBox', 'SHAPES', 'render_scene', 'write_ade20k_layout', 'write_coco_layout',
           'write_image_folder']
