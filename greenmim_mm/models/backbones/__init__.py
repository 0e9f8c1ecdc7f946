from .green_convnext import (GreenConvNeXt, green_convnext_block, pointwise,
                             sparse_grn, token_layer_norm)
from .green_swin import GreenSwinTransformer, green_swin_block, merge_visible
from .green_twins import (GreenPCPVT, GreenSVT, GreenTwinsMixin, green_gsa,
                          green_twins_layer)
from .masked_backbone import MaskedBackboneMixin
from .pretrained_check import (PretrainedReport, init_weights_checked,
                               load_pretrained_checked)

__all__ = [
    'GreenConvNeXt', 'green_convnext_block', 'pointwise', 'sparse_grn',
    'token_layer_norm',
    'GreenSwinTransformer', 'green_swin_block', 'merge_visible',
    'GreenPCPVT', 'GreenSVT', 'GreenTwinsMixin', 'green_gsa',
    'green_twins_layer', 'MaskedBackboneMixin', 'PretrainedReport',
    'init_weights_checked', 'load_pretrained_checked'
]
