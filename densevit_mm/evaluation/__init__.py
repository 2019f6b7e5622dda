from .correspondence import (correspondence_accuracy, hub_share, patch_centers_in_source,
                             true_correspondence)
from .feature_rank import rankme

__all__ = ['correspondence_accuracy', 'hub_share', 'patch_centers_in_source', 'rankme',
           'true_correspondence']
