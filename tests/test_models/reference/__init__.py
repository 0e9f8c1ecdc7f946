"""Dense references for the masked paths, written from the contract.

Nothing here imports ``greenmim_mm``: the references use only torch and the
mmpretrain / mmcv modules (weights and submodules) of a plain mmpretrain
backbone, with their own window partition, cyclic shift, region labels,
relative-position index and token order.
"""
from .inputs import random_images, random_masks, unit_grid
from .order import (contract_coords, morton_positions, pick_tokens,
                    row_major_positions, valid_map)
from .swin_dense import (own_relative_position_index, swin_reference,
                         swin_reference_maps, swin_shift)
from .twins_dense import twins_reference, twins_reference_maps

__all__ = [
    'random_images', 'random_masks', 'unit_grid', 'contract_coords',
    'morton_positions', 'pick_tokens', 'row_major_positions', 'valid_map',
    'own_relative_position_index', 'swin_reference', 'swin_reference_maps',
    'swin_shift', 'twins_reference', 'twins_reference_maps'
]
