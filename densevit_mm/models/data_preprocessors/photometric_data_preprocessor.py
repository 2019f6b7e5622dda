"""The photometric part of the two-view augmentation, batched on the training device."""
from typing import Optional

import numpy as np
from mmpretrain.models.utils import SelfSupDataPreprocessor
from mmpretrain.registry import MODELS

from densevit_mm.datasets.transforms.batched_photometric import apply_photometric


@MODELS.register_module()
class PhotometricDataPreprocessor(SelfSupDataPreprocessor):
    """``SelfSupDataPreprocessor`` that first applies, batched on the device, the colour
    jitter, grayscale and blur that :class:`DeferredPhotometric` drew in the data workers.

    The workers then only decode, crop, flip and resize; the uint8 views get their
    photometric augmentation here -- equal to what mmpretrain's per-image transforms would
    have done (exactly on a CPU) -- and are then converted to RGB and normalised as
    ``SelfSupDataPreprocessor`` does.  Arguments are ``SelfSupDataPreprocessor``'s.

    In training every sample must carry ``view_photometric`` (else the views would train
    without colour augmentation, and this raises); outside training, batches without it are
    only normalised.
    """

    # a subclass that makes the views itself may train without a photometric part
    requires_photometric = True

    def forward(self, data: dict, training: bool = False) -> dict:
        data = self.cast_data(data)
        samples: Optional[list] = data.get('data_samples')
        if samples and 'view_photometric' in samples[0]:
            params = np.stack([np.asarray(s.view_photometric)
                               for s in samples])  # (B, V, NUM_COLUMNS), on the host
            views = data['inputs']
            if not isinstance(views, (list, tuple)) or len(views) != params.shape[1]:
                raise ValueError(f'{params.shape[1]} views of photometric parameters per '
                                 f'image, but the inputs are not a list of as many views')
            data['inputs'] = [apply_photometric(view, params[:, v])
                              for v, view in enumerate(views)]
        elif training and self.requires_photometric:
            raise ValueError(
                'PhotometricDataPreprocessor got a training batch without view_photometric: '
                "put dict(type='DeferredPhotometric', transforms=[...]) in each view pipeline "
                "and 'view_photometric' in PackInputs' algorithm_keys (see "
                'configs/pretrain/densevit_s_device-photometric.py), or use '
                'SelfSupDataPreprocessor with the per-image photometric transforms.')
        return super().forward(data, training)
