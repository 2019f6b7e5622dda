from .collate_source_images import collate_source_images
from .image_check import (IMAGE_EXTENSIONS, MAX_PIXELS, image_size, too_large_reason,
                          unreadable_reason)
from .samplers import ResumableBatchSampler, ResumableSampler, draw_seeds
from .seeded_dataset import SeededDataset, seeded
from .synthetic_layouts import BUILTIN_MARKER, write_ade20k_layout, write_coco_layout
from .synthetic_scenes import SHAPES, render_scene, write_image_folder
from .transforms import DeferredResizedCrop, MultiViewWithGeometry, RandomResizedCropWithBox
from .image_shards import ShardError, read_index, stage_shards, write_shards
from .unlabeled_image_folder import UnlabeledImageFolder, UnreadableImageError
from .unlabeled_image_shards import UnlabeledImageShards

__all__ = ['BUILTIN_MARKER', 'DeferredResizedCrop', 'IMAGE_EXTENSIONS', 'MAX_PIXELS',
           'MultiViewWithGeometry', 'RandomResizedCropWithBox', 'ResumableBatchSampler',
           'ResumableSampler', 'SHAPES', 'SeededDataset', 'ShardError', 'UnlabeledImageFolder',
           'UnlabeledImageShards', 'UnreadableImageError', 'collate_source_images',
           'draw_seeds', 'image_size', 'read_index', 'render_scene', 'seeded', 'stage_shards',
           'too_large_reason', 'unreadable_reason', 'write_ade20k_layout', 'write_coco_layout',
           'write_image_folder', 'write_shards']
