from .vit_checkpoint import (densevit_to_timm, find_backbone, load_densevit_state_dict,
                             timm_to_densevit)

__all__ = ['densevit_to_timm', 'find_backbone', 'load_densevit_state_dict', 'timm_to_densevit']
