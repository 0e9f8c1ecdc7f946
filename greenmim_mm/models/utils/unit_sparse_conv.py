"""Sparse-conv plans of unit masks: made on the model's device.

:func:`.sparse_conv.plan_sparse_conv` is vectorised with static shapes (a
sort and binary searches; no ``nonzero``, no ``item``), so its token-level
work can run where the model runs. The host keeps only the visible unit ids.

Unit masks also allow a *tiled* submanifold depthwise conv
(:func:`tile_depthwise_conv2d`): every visible unit's ``u x u`` tokens plus
a halo of ``k // 2`` tokens are gathered, in one ``index_select``, into a
``(T, u + k - 1, u + k - 1, C)`` tile (masked or outside positions read the
zero row), and one dense depthwise ``conv2d`` without padding computes the
``u x u`` outputs of every tile. Its exact result is the gather conv's, but
it is a handful of large ops instead of ``2 K`` small ones per pass; time
and memory scale with the visible units (a tile holds ``(1 + (k - 1) / u)
** 2`` times its unit's tokens: 3.1x for ConvNeXt's stage 1, 49x when a
unit is a single token, where the gather conv is the better choice).
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .masking import morton_offsets, token_coords
from .sparse_conv import (SparseConvPlan, gather_conv_backward, token_rows,
                          plan_sparse_conv)
from .transfer import to_device


@dataclass
class UnitTilePlan:
    """Index tensors of the tiled depthwise conv of one unit layout.

    Attributes:
        tile_index (Tensor): ``(T * th * tw,)`` long; the token row of every
            tile position (tile, row, col), ``M`` (a zero row) where it is
            masked or outside the map.
        morton_to_raster (Tensor): ``(u * u,)`` long; for each token of a
            unit in Morton order, its raster position in the unit.
        raster_to_morton (Tensor): ``(u * u,)`` long; the inverse.
        num_tiles (int): ``T``, the visible units of the batch.
        unit (int): ``u``, the unit side in tokens.
        kernel_size (tuple[int, int]): ``(kh, kw)``, both odd.
    """
    tile_index: Tensor
    morton_to_raster: Tensor
    raster_to_morton: Tensor
    num_tiles: int
    unit: int
    kernel_size: Tuple[int, int]

    @property
    def num_tokens(self) -> int:
        """Visible tokens ``M = T * u * u``."""
        return self.num_tiles * self.unit**2

    @property
    def tile_hw(self) -> Tuple[int, int]:
        """Tile size ``(u + kh - 1, u + kw - 1)``."""
        return (self.unit + self.kernel_size[0] - 1,
                self.unit + self.kernel_size[1] - 1)


def plan_unit_tiles(vis: Tensor, grid_hw: Tuple[int, int], levels: int,
                    kernel_size: Tuple[int, int]) -> UnitTilePlan:
    """Tile plan of a stage whose tokens are ``vis``' units, Morton inside.

    Static shapes, no ``nonzero`` or ``item``: it runs on any device, and
    its memory is ``O(T (u + k - 1)^2 + B L)``.

    Args:
        vis (Tensor): ``(B, n_vis)`` visible unit ids (row-major over the
            unit grid), ascending per sample.
        grid_hw (tuple[int, int]): Unit grid ``(Hu, Wu)``.
        levels (int): log2 of the unit side ``u`` in tokens.
        kernel_size (tuple[int, int]): Odd kernel size.

    Returns:
        UnitTilePlan: Rows follow :func:`.token_coords`' order.
    """
    kh, kw = kernel_size
    if kh % 2 == 0 or kw % 2 == 0:
        raise ValueError(f'A submanifold conv needs an odd kernel, got '
                         f'{tuple(kernel_size)}.')
    b, n = vis.shape
    gh, gw = int(grid_hw[0]), int(grid_hw[1])
    u, device = 2**levels, vis.device
    m = b * n * u * u
    # slot of every unit of the grid in its sample's token list, -1 masked
    slot = torch.full((b, gh * gw), -1, dtype=torch.long, device=device)
    slot.scatter_(1, vis.long(), torch.arange(n, device=device).expand(b, n))
    offs = morton_offsets(levels, device)  # (u*u, 2), Morton order
    m2r = offs[:, 0] * u + offs[:, 1]  # (u*u,)
    r2m = torch.empty_like(m2r).scatter_(0, m2r, torch.arange(
        u * u, device=device))  # raster -> Morton
    ur = (vis // gw).long() * u  # (B, n) top row of each unit, in tokens
    uc = (vis % gw).long() * u
    rows = ur[..., None] + torch.arange(-(kh // 2), u + kh // 2,
                                        device=device)  # (B, n, th)
    cols = uc[..., None] + torch.arange(-(kw // 2), u + kw // 2,
                                        device=device)  # (B, n, tw)
    rows, cols = rows[..., :, None], cols[..., None, :]  # (B, n, th|1, 1|tw)
    inside = (rows >= 0) & (rows < gh * u) & (cols >= 0) & (cols < gw * u)
    rr, cc = rows.clamp(0, gh * u - 1), cols.clamp(0, gw * u - 1)
    unit_id = (rr // u) * gw + cc // u  # (B, n, th, tw)
    s = slot.gather(1, unit_id.flatten(1)).view(unit_id.shape)
    within = r2m[(rr % u) * u + cc % u]  # Morton rank inside the unit
    bi = torch.arange(b, device=device).view(b, 1, 1, 1)
    row = (bi * n + s) * (u * u) + within
    index = torch.where(inside & (s >= 0), row, torch.full_like(row, m))
    return UnitTilePlan(index.flatten(), m2r, r2m, b * n, u,
                        (int(kh), int(kw)))


def _tile_conv(feats: Tensor, weight: Tensor, bias: Optional[Tensor],
               plan: UnitTilePlan) -> Tensor:
    """``(M, C)`` tokens -> ``(M, C)``: depthwise conv over the tiles."""
    t, u, c = plan.num_tiles, plan.unit, feats.shape[1]
    th, tw = plan.tile_hw
    padded = torch.cat([feats, feats.new_zeros(1, c)], 0)  # (M + 1, C)
    # (T*th*tw, C) -> (T, th, tw, C) -> NCHW view, channels-last memory
    tiles = padded.index_select(0, plan.tile_index).view(t, th, tw, c)
    out = F.conv2d(tiles.permute(0, 3, 1, 2), weight, bias, groups=c)
    # (T, C, u, u) -> (T, u*u, C) raster -> Morton order inside the unit
    out = out.permute(0, 2, 3, 1).reshape(t, u * u, c)
    if u > 1:
        out = out.index_select(1, plan.morton_to_raster)
    return out.reshape(t * u * u, c)


class _TileDepthwiseConv(torch.autograd.Function):
    """Tiled depthwise conv; saves only the input tokens.

    The input gradient is the same tiled conv of the output gradient with
    the flipped kernel (the visible-neighbour relation is symmetric, as in
    the gather backend). The weight gradient correlates the input tiles
    with the output gradient of each tile: one grouped conv (``T * C``
    groups, the ``u x u`` gradient as kernel) for ``u > 1``, a weighted sum
    of the tiles for ``u = 1``.
    """

    @staticmethod
    def forward(ctx, feats, weight, bias, plan, neighbor_index):
        ctx.save_for_backward(feats, weight)
        ctx.plan, ctx.has_bias = plan, bias is not None
        ctx.neighbor_index = neighbor_index
        return _tile_conv(feats, weight, bias, plan)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        feats, weight = ctx.saved_tensors
        plan = ctx.plan
        grad_out = grad_out.contiguous()
        need_in, need_w, need_b = ctx.needs_input_grad[:3]
        grad_in = grad_w = grad_b = None
        grad_b = grad_out.sum(0) if ctx.has_bias and need_b else None
        if ctx.neighbor_index is not None:  # the gather conv's backward
            c, _, kh, kw = weight.shape
            w = weight.view(c, 1, 1, kh * kw).permute(3, 0, 1, 2)
            grad_in, gw = gather_conv_backward(
                feats, w, ctx.neighbor_index, grad_out, need_in, need_w)
            if gw is not None:  # (K, C, 1, 1) -> (C, 1, kh, kw)
                grad_w = gw.permute(1, 2, 3, 0).reshape(c, 1, kh, kw)
            return grad_in, grad_w, grad_b, None, None
        if need_in:
            grad_in = _tile_conv(grad_out, weight.flip(2, 3), None, plan)
        if need_w:
            t, u, c = plan.num_tiles, plan.unit, feats.shape[1]
            th, tw = plan.tile_hw
            padded = torch.cat([feats, feats.new_zeros(1, c)], 0)
            tiles = padded.index_select(0, plan.tile_index).view(
                t, th, tw, c)  # (T, th, tw, C)
            if u == 1:  # dW[c, i, j] = sum_t tiles[t, i, j, c] dy[t, c]
                gw = (tiles * grad_out.view(t, 1, 1, c)).sum(0)
            else:
                g = grad_out.view(t, u * u, c).index_select(
                    1, plan.raster_to_morton)  # (T, u*u, C) raster
                g = g.view(t, u, u, c).permute(0, 3, 1, 2).reshape(
                    t * c, 1, u, u)  # one u x u kernel per (tile, channel)
                x = tiles.permute(0, 3, 1, 2).reshape(1, t * c, th, tw)
                gw = F.conv2d(x, g, groups=t * c).view(
                    t, c, th - u + 1, tw - u + 1).sum(0)  # (C, kh, kw)
                gw = gw.permute(1, 2, 0)  # (kh, kw, C)
            grad_w = gw.permute(2, 0, 1).unsqueeze(1).to(weight.dtype)
        return grad_in, grad_w, grad_b, None, None


def tile_depthwise_conv2d(conv: nn.Conv2d, feats: Tensor,
                          plan: UnitTilePlan,
                          backward_plan: Optional[SparseConvPlan] = None
                          ) -> Tensor:
    """Submanifold depthwise conv of unit-ordered tokens, tiled.

    Equals :func:`.sparse_conv.sparse_conv2d` (the dense conv of the map
    with masked positions zeroed, at the visible tokens). With
    ``backward_plan`` (the same layout's neighbour table) the backward is
    the gather conv's one-pass backward, which is faster on the CPU than
    the tiled one (whose weight gradient is a conv with ``T * C`` groups);
    the forward stays tiled.

    Args:
        conv (nn.Conv2d): Depthwise (``groups == in == out channels``),
            stride 1, dilation 1, "same" zero padding, odd kernel.
        feats (Tensor): ``(M, C)`` or ``(B, N, C)`` tokens, unit by unit,
            Morton inside the unit.
        plan (UnitTilePlan): From :func:`plan_unit_tiles`.
        backward_plan (SparseConvPlan, optional): Neighbour table for a
            gather-conv backward. Defaults to None (tiled backward).

    Returns:
        Tensor: Same shape as ``feats``.
    """
    check_tile_conv(conv)
    if backward_plan is not None and (
            backward_plan.num_tokens != plan.num_tokens or
            tuple(backward_plan.kernel_size) != tuple(plan.kernel_size)):
        raise ValueError('backward_plan is not the tile plan\'s layout.')
    if tuple(conv.kernel_size) != tuple(plan.kernel_size):
        raise ValueError(f'Tile plan made for kernel {plan.kernel_size}; '
                         f'the conv has kernel {conv.kernel_size}.')
    shape = feats.shape
    flat = token_rows(feats, plan.num_tokens, conv, 'a tile plan')  # (M, C)
    weight = conv.weight.to(flat.dtype)
    bias = None if conv.bias is None else conv.bias.to(flat.dtype)
    index = None if backward_plan is None else backward_plan.neighbor_index
    out = _TileDepthwiseConv.apply(flat.contiguous(), weight, bias, plan,
                                   index)
    return out.view(shape)


def check_tile_conv(conv: nn.Conv2d) -> None:
    """Raise unless ``conv`` suits :func:`tile_depthwise_conv2d`."""
    from .sparse_conv import check_submanifold
    check_submanifold(conv)
    if not (conv.groups == conv.in_channels == conv.out_channels) or \
            conv.dilation != (1, 1):
        raise ValueError(
            'The tiled sparse conv needs a depthwise conv (groups == in == '
            f'out channels) without dilation; got groups={conv.groups}, '
            f'{conv.in_channels} -> {conv.out_channels} channels, dilation '
            f'{conv.dilation}.')


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
    _tiles: Dict[torch.device, UnitTilePlan] = field(
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

    def tiles(self, device) -> UnitTilePlan:
        """The tile plan (:func:`plan_unit_tiles`) on ``device`` (queued,
        no sync; once per device)."""
        device = torch.device(device)
        if device not in self._tiles:
            if self.dilation != (1, 1):
                raise ValueError('The tiled sparse conv has no dilation; '
                                 f'this plan has dilation {self.dilation}.')
            u = 2**self.levels
            grid = (self.hw[0] // u, self.hw[1] // u)
            if grid[1] != self.grid_w or grid[0] * u != self.hw[0] or \
                    grid[1] * u != self.hw[1]:
                raise ValueError(
                    f'Map {self.hw} is not a grid of {u}x{u} units '
                    f'{self.grid_w} wide.')
            vis = self.upload(device)._uploaded[device]
            self._tiles[device] = plan_unit_tiles(vis, grid, self.levels,
                                                  self.kernel_size)
        return self._tiles[device]

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['_uploaded'], state['_built'], state['_tiles'] = {}, {}, {}
        return state
