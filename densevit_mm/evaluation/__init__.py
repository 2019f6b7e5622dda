from .correspondence import (correspondence_accuracy, patch_centers_in_source,
                             true_correspondence)

__all__ = ['correspondence_accuracy', 'patch_centers_in_source', 'true_correspondence']
