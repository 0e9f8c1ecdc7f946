"""Sparse-conv plans of unit masks: made on the model's device.

:func:`.sparse_conv.plan_sparse_conv` is vectorised with static shapes (a
sort and binary searches; no ``nonzero``, no ``item``), so its token-level
work can run where the model runs. The host keeps only the visible unit ids.
"""
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch
from torch import Tensor

from .masking import token_coords
from .sparse_conv import SparseConvPlan, plan_sparse_conv
from .transfer import to_device


@dataclass(eq=False)
class UnitSparseConvPlan:
    """Host half of a submanifold-conv plan: the visible units.

    ``to(device)`` builds the :class:`.SparseConvPlan` on ``device`` (once
    per device). Rows follow the tokens' order: visible unit ascending, then
    Morton order inside the unit.

    Attributes:
        vis (Tensor): ``(B, n_vis)`` visible unit ids (host).
        grid_w (int): Width of the unit grid.
        levels (int): log2 of the unit side in tokens of the stage.
        hw (tuple[int, int]): Feature-map size.
        kernel_size (tuple[int, int]): Odd kernel size.
        dilation (tuple[int, int]): Kernel dilation.
    """
    vis: Tensor
    grid_w: int
    levels: int
    hw: Tuple[int, int]
    kernel_size: Tuple[int, int]
    dilation: Tuple[int, int]
    _uploaded: Dict[torch.device, Tensor] = field(
        default_factory=dict, repr=False)
    _built: Dict[torch.device, SparseConvPlan] = field(
        default_factory=dict, repr=False)

    def upload(self, device) -> 'UnitSparseConvPlan':
        """Queue the copy of the unit ids to ``device``; returns ``self``."""
        device = torch.device(device)
        if device not in self._uploaded:
            self._uploaded[device] = to_device(self.vis, device)
        return self

    def to(self, device, non_blocking: bool = False) -> SparseConvPlan:
        """The neighbour table on ``device`` (queued, no sync)."""
        device = torch.device(device)
        if device not in self._built:
            vis = self.upload(device)._uploaded[device]
            coords = token_coords(vis, self.grid_w, self.levels)
            self._built[device] = plan_sparse_conv(
                coords, self.hw, self.kernel_size, self.dilation)
        return self._built[device]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['_uploaded'], state['_built'] = {}, {}
        return state
