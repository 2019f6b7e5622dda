"""The two-view augmentation made on the training device from decoded images."""
import numpy as np
import torch
from mmpretrain.registry import MODELS

from densevit_mm.datasets.transforms.batched_resized_crop import resized_crops
from .photometric_data_preprocessor import PhotometricDataPreprocessor


@MODELS.register_module()
class DeviceAugmentDataPreprocessor(PhotometricDataPreprocessor):
    """Makes the views on the device: crop and resize, flip, then (as
    :class:`PhotometricDataPreprocessor`) colour jitter, grayscale and blur, then RGB and
    normalisation as ``SelfSupDataPreprocessor``.

    The data workers decode each image and draw every parameter (``DeferredResizedCrop``,
    ``DeferredPhotometric``, ``RandomFlip`` inside ``MultiViewWithGeometry``) with the same
    random calls as the per-image pipeline; ``collate_source_images`` sends the decoded images
    (the part of each that the views cover) as one uint8 tensor.  Here every view of the
    batch is cut and resized at once, as Pillow's
    bilinear resize does it (bit for bit, :mod:`batched_resized_crop`), and flipped where it
    was drawn so: with the same seed the model gets the same input tensors as with the
    per-image pipeline.  Arguments are ``SelfSupDataPreprocessor``'s.

    In training, the batch must come from such a pipeline (this raises otherwise); outside
    training, batches of ready views are only normalised.
    """

    requires_photometric = False

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        sources, samples = data.get('inputs'), data.get('data_samples')
        if isinstance(sources, torch.Tensor) and sources.dim() == 1 and samples and \
                'source_shape' in samples[0]:
            data['inputs'] = self.make_views(sources, samples)
        elif training:
            raise ValueError(
                'DeviceAugmentDataPreprocessor got a training batch of ready views, not of '
                "decoded images: its pipeline needs DeferredResizedCrop in MultiViewWithGeometry's "
                "view pipelines and collate_fn=dict(type='collate_source_images') (see "
                'configs/pretrain/densevit_s.py), or use SelfSupDataPreprocessor with the '
                'per-image pipeline.')
        return super().forward(data, training)

    @staticmethod
    def make_views(sources: torch.Tensor, samples: list) -> list:
        """Every view of the batch from the decoded images: ``V`` tensors ``(B, 3, h, w)``,
        float32 integer values 0..255, BGR as decoded."""
        shapes = np.array([s.source_shape for s in samples], dtype=np.int64)  # (B, 2)
        origins = np.array([s.source_origin for s in samples], dtype=np.int64)  # (B, 2): x, y
        sizes = shapes[:, 0] * shapes[:, 1] * 3
        offsets = np.concatenate([[0], np.cumsum(sizes)[:-1]])  # (B,)
        if sizes.sum() != sources.numel():
            raise ValueError(f'the batch holds {sources.numel()} bytes of images, its '
                             f'source_shape metainfo says {sizes.sum()}')
        geometry = np.stack([np.asarray(s.view_geometry) for s in samples])  # (B, V, 7)
        views = []
        for v in range(geometry.shape[1]):
            size = geometry[:, v, 5:7]
            if (size != size[0]).any():
                raise ValueError(f'view {v} has several output sizes in one batch: '
                                 f'{np.unique(size, axis=0).tolist()}')
            boxes = geometry[:, v, :4].astype(np.int64) - np.tile(origins, 2)  # (B, 4)
            view = resized_crops(sources, offsets, shapes, boxes,
                                 tuple(int(x) for x in size[0]))  # (B, 3, h, w)
            flipped = torch.from_numpy(geometry[:, v, 4] == 1).to(view.device, non_blocking=True)
            views.append(torch.where(flipped.view(-1, 1, 1, 1), view.flip(-1), view))
        return views
