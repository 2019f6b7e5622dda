from .synthetic_scenes import SHAPES, render_scene, write_image_folder

__all__ = ['SHAPES', 'render_scene', 'write_image_folder']
