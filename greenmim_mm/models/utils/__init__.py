from .bias_gather import (bias_index, bias_reduction, blocking_bias,
                          gather_bias, prepare_bias, relative_index)
from .group_attention import group_window_attention
from .grouping import (GroupPlan, best_subset, effective_shift, group_cost,
                       num_groups, pack_windows, search_group_size,
                       window_ids)
from .window_plan import (UnitGroupPlan, WindowPacking, assign_windows,
                          expand_group_plan, pack_histogram,
                          plan_group_attention, plan_single_window,
                          plan_unit_windows, unit_window_table)
from .masking import (as_unit_mask, check_batched, check_mask_ratio,
                      check_unit_mask,
                      morton_offsets,
                      num_visible_units, patchify, random_unit_mask,
                      restore_ids, token_coords, unit_grid, unpatchify,
                      visible_unit_ids)
from .unit_conv import check_cell_conv, conv_on_cells, embed_visible_units
from .layer_norm import layer_norm
from .nonfinite import isolate_nonfinite, mark_nonfinite
from .transfer import to_device
from .unit_sparse_conv import UnitSparseConvPlan
from .sparse_conv import (SparseConvPlan, plan_sparse_conv, resolve_backend,
                          sparse_conv2d, spconv_available)

__all__ = [
    'check_cell_conv', 'conv_on_cells', 'embed_visible_units',
    'bias_index', 'bias_reduction', 'blocking_bias', 'gather_bias',
    'prepare_bias',
    'group_window_attention',
    'GroupPlan', 'assign_windows', 'best_subset', 'effective_shift',
    'group_cost',
    'num_groups', 'pack_windows', 'plan_group_attention',
    'plan_single_window', 'relative_index', 'search_group_size',
    'window_ids', 'check_batched', 'UnitGroupPlan', 'WindowPacking',
    'expand_group_plan',
    'pack_histogram', 'plan_unit_windows', 'unit_window_table',
    'as_unit_mask', 'check_mask_ratio', 'check_unit_mask',
    'morton_offsets',
    'num_visible_units', 'patchify', 'unpatchify',
    'random_unit_mask', 'restore_ids', 'token_coords', 'unit_grid',
    'visible_unit_ids',
    'SparseConvPlan', 'plan_sparse_conv', 'resolve_backend',
    'sparse_conv2d', 'spconv_available', 'to_device', 'UnitSparseConvPlan',
    'isolate_nonfinite', 'mark_nonfinite', 'layer_norm'
]
