"""Mask-unit masking for hierarchical ViTs (pure planning functions).

Mask convention, used everywhere in greenmim_mm: **1 (True) = masked**, as in
MAE. A mask has shape ``(B, Hu * Wu)`` over the mask-unit grid, flattened in
row-major order. A mask unit is a square of ``unit`` pixels whose side equals
the network's final stride (32 px for Swin or Twins with patch 4 and four
stages), so every patch-merging group is either entirely visible or entirely
masked.

Inside a unit, the tokens of a stage are ordered in Morton (Z) order with the
row bit before the column bit at every level. The four tokens of each 2x2
merge group are then consecutive, in the (0,0), (0,1), (1,0), (1,1) order that
``mmcv.cnn.PatchMerging`` expects, and merging is a reshape.
"""
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import Tensor


def unit_grid(img_hw: Tuple[int, int], unit: int) -> Tuple[int, int]:
    """Return the mask-unit grid ``(Hu, Wu)`` of an image.

    Args:
        img_hw (tuple[int, int]): Image height and width in pixels.
        unit (int): Side of a mask unit in pixels.

    Returns:
        tuple[int, int]: Number of unit rows and columns.

    Raises:
        ValueError: If a side is not a positive multiple of ``unit``.
    """
    h, w = int(img_hw[0]), int(img_hw[1])
    if h <= 0 or w <= 0 or h % unit or w % unit:
        raise ValueError(
            f'Image size {h}x{w} is not a multiple of the mask unit '
            f'({unit} px, the final stride of the backbone). Resize or crop '
            f'the input to a multiple of {unit}, e.g. '
            f'{max(unit, round(h / unit) * unit)}x'
            f'{max(unit, round(w / unit) * unit)}.')
    return h // unit, w // unit


def as_unit_mask(mask: Any) -> Tensor:
    """Coerce an array-like unit mask to a CPU bool tensor (True = masked).

    Accepts tensors, numpy arrays and (nested) lists of bool, int or float
    whose values are all 0 or 1. A CUDA tensor is copied to the CPU once
    here (the planning runs on the CPU anyway), so the value checks below
    need no further host-device sync.

    Args:
        mask (Tensor | numpy.ndarray | list): ``(B, Hu * Wu)`` or
            ``(B, Hu, Wu)`` unit mask, 1 = masked.

    Returns:
        Tensor: The mask as a bool tensor on the CPU, same shape.

    Raises:
        TypeError: If the mask is not array-like, or not bool/int/float.
        ValueError: If a value is neither 0 nor 1 (a soft mask).
    """
    if not isinstance(mask, Tensor):
        try:
            mask = torch.as_tensor(mask)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(
                'mask must be a tensor, numpy array or list of 0/1 values, '
                f'got {type(mask).__name__} that torch cannot read: '
                f'{err}') from err
    mask = mask.detach().cpu()
    if mask.dtype == torch.bool:
        return mask
    if mask.dtype.is_complex:  # otherwise int or float: checked below
        raise TypeError(f'mask must hold bool, int or float values, got '
                        f'dtype {mask.dtype}.')
    binary = (mask == 0) | (mask == 1)
    if not bool(binary.all()):
        bad = mask[~binary].flatten()[:4].tolist()
        raise ValueError(
            'mask must be binary (1 = masked, 0 = visible): got a soft '
            f'mask with value(s) such as {bad}. Threshold it first, e.g. '
            '`mask > 0.5`.')
    return mask.bool()


def check_batched(img_shape: Sequence[int]) -> None:
    """Raise a clear error for images without a batch dimension.

    Args:
        img_shape (Sequence[int]): Shape of the image tensor.

    Raises:
        ValueError: If it is not ``(B, C, H, W)``.
    """
    if len(img_shape) != 4:
        raise ValueError(
            f'expected (B, 3, H, W) images, got shape {tuple(img_shape)}; '
            'a single image needs a batch dimension, e.g. `img[None]`.')


def check_unit_mask(img_shape: Sequence[int], mask: Any,
                    unit: int) -> Tuple[int, int]:
    """Check that a unit mask fits a batch of images.

    Call :func:`as_unit_mask` first and pass its result, so the mask is
    converted once; any other array-like is converted here for the checks.

    Args:
        img_shape (Sequence[int]): ``(B, C, H, W)`` shape of the images.
        mask (Tensor): ``(B, Hu * Wu)`` or ``(B, Hu, Wu)`` unit mask.
        unit (int): Side of a mask unit in pixels.

    Returns:
        tuple[int, int]: The unit grid ``(Hu, Wu)``.

    Raises:
        ValueError: If the images have no batch dimension, the image size
            is not a multiple of ``unit``, the mask does not match the
            batch or the grid, is not binary, or hides every unit of a
            sample.
    """
    check_batched(img_shape)
    mask = as_unit_mask(mask)
    b = img_shape[0]
    grid = unit_grid(img_shape[-2:], unit)
    if mask.dim() not in (2, 3) or mask.shape[0] != b or \
            mask[0].numel() != grid[0] * grid[1]:
        raise ValueError(
            f'mask of shape {tuple(mask.shape)} does not match images of '
            f'shape {tuple(img_shape)}: expected ({b}, {grid[0] * grid[1]}) '
            f'or ({b}, {grid[0]}, {grid[1]}) for a {unit} px mask unit.')
    full = mask.reshape(b, -1).all(dim=1)  # (B, ) every unit masked
    if bool(full.any()):
        raise ValueError(
            'mask leaves no visible unit in sample(s) '
            f'{full.nonzero().flatten().tolist()}: every sample needs at '
            'least one visible (0) mask unit.')
    return grid


def check_mask_ratio(mask_ratio: float) -> float:
    """Validate a mask ratio, which must lie strictly inside (0, 1).

    Args:
        mask_ratio (float): Fraction of mask units to hide.

    Returns:
        float: The ratio, as a float.
    """
    if not isinstance(mask_ratio, (int, float)) or isinstance(
            mask_ratio, bool) or not 0.0 < float(mask_ratio) < 1.0:
        raise ValueError(
            f'mask_ratio must be a number strictly between 0 and 1, '
            f'got {mask_ratio!r}.')
    return float(mask_ratio)


def num_visible_units(num_units: int, mask_ratio: float) -> int:
    """Number of visible units per sample, the same for every sample.

    Follows MAE: ``int(num_units * (1 - mask_ratio))``.

    Args:
        num_units (int): Units in the grid, ``Hu * Wu``.
        mask_ratio (float): Fraction of units to mask, in (0, 1).

    Returns:
        int: Visible units, at least 1.

    Raises:
        ValueError: If the ratio leaves no visible unit.
    """
    ratio = check_mask_ratio(mask_ratio)
    n_vis = int(num_units * (1.0 - ratio))
    if n_vis < 1:
        raise ValueError(
            f'mask_ratio={ratio} leaves no visible mask unit out of '
            f'{num_units}; lower the ratio or use a larger image.')
    return n_vis


def random_unit_mask(batch_size: int,
                     grid_hw: Tuple[int, int],
                     mask_ratio: float,
                     device: Optional[torch.device] = None,
                     generator: Optional[torch.Generator] = None) -> Tensor:
    """Draw an independent random mask for every sample.

    Args:
        batch_size (int): Number of samples ``B``.
        grid_hw (tuple[int, int]): Unit grid ``(Hu, Wu)``.
        mask_ratio (float): Fraction of units to mask, in (0, 1).
        device (torch.device, optional): Device of the mask.
            Defaults to None (CPU).
        generator (torch.Generator, optional): Random generator.
            Defaults to None.

    Returns:
        Tensor: Bool mask of shape ``(B, Hu * Wu)``, True = masked, with the
        same number of visible units in every row.
    """
    num_units = grid_hw[0] * grid_hw[1]
    n_vis = num_visible_units(num_units, mask_ratio)
    noise = torch.rand(
        batch_size, num_units, device=device, generator=generator)
    keep = noise.argsort(dim=1)[:, :n_vis]  # (B, n_vis)
    mask = torch.ones(batch_size, num_units, dtype=torch.bool, device=device)
    mask.scatter_(1, keep, False)
    return mask


def visible_unit_ids(mask: Tensor) -> Tensor:
    """Indices of the visible units of each sample, in ascending order.

    Args:
        mask (Tensor): ``(B, L)`` mask, True = masked, with the same number of
            visible units per row.

    Returns:
        Tensor: ``(B, n_vis)`` long tensor of unit indices.

    Raises:
        ValueError: If rows differ in their number of visible units.
    """
    mask = mask.bool()
    n_vis = (~mask).sum(1)
    if n_vis.numel() and bool((n_vis != n_vis[0]).any()):
        raise ValueError('Every sample must have the same number of visible '
                         f'units, got {n_vis.tolist()}.')
    # a stable sort on the mask puts visible (False) units first, ascending
    order = mask.to(torch.uint8).argsort(dim=1, stable=True)
    return order[:, :int(n_vis[0]) if n_vis.numel() else 0]


def restore_ids(mask: Tensor) -> Tensor:
    """MAE-style ``ids_restore``: un-shuffles [visible, masked] to the grid.

    Args:
        mask (Tensor): ``(B, L)`` mask, True = masked.

    Returns:
        Tensor: ``(B, L)`` long tensor; ``cat([vis, masked])[ids_restore]``
        is in grid order.
    """
    order = mask.bool().to(torch.uint8).argsort(dim=1, stable=True)
    return order.argsort(dim=1)


def morton_offsets(levels: int, device: Optional[torch.device] = None
                   ) -> Tensor:
    """Row/column offsets of the tokens of a ``2**levels`` square in Morton
    order (row bit first at each level, the finest level last).

    Args:
        levels (int): Side of the square is ``2 ** levels``.
        device (torch.device, optional): Output device. Defaults to None.

    Returns:
        Tensor: ``(4 ** levels, 2)`` long tensor of ``(row, col)``.
    """
    idx = torch.arange(4**levels, device=device)
    row = torch.zeros_like(idx)
    col = torch.zeros_like(idx)
    for bit in range(levels):
        # bits of idx: ... r1 c1 r0 c0 (r0/c0 = finest level)
        col |= ((idx >> (2 * bit)) & 1) << bit
        row |= ((idx >> (2 * bit + 1)) & 1) << bit
    return torch.stack([row, col], dim=1)


def token_coords(vis_ids: Tensor, grid_w: int, levels: int) -> Tensor:
    """Coordinates of the visible tokens of a stage.

    A stage has ``4 ** levels`` tokens per unit (``levels`` = stages left
    until the last one). Tokens are ordered unit by unit (as in ``vis_ids``),
    then in Morton order inside the unit.

    Args:
        vis_ids (Tensor): ``(B, n_vis)`` visible unit indices.
        grid_w (int): Width ``Wu`` of the unit grid.
        levels (int): log2 of the unit side, in tokens of this stage.

    Returns:
        Tensor: ``(B, n_vis * 4 ** levels, 2)`` long ``(row, col)`` in the
        stage's feature map.
    """
    side = 2**levels
    unit_rc = torch.stack([vis_ids // grid_w, vis_ids % grid_w], -1) * side
    offs = morton_offsets(levels, vis_ids.device)  # (T_u, 2)
    coords = unit_rc[:, :, None, :] + offs[None, None]  # (B, n_vis, T_u, 2)
    return coords.flatten(1, 2)


def patchify(imgs: Tensor, unit: int) -> Tensor:
    """``(B, C, H, W)`` -> ``(B, L, unit * unit * C)``, units row-major.

    The layout of the reconstruction targets (pixel-major, channel last),
    used by ``GreenMIMHead`` and the visualisation.

    Args:
        imgs (Tensor): Images.
        unit (int): Mask-unit side in pixels.

    Returns:
        Tensor: Flattened units.
    """
    b, c, hh, ww = imgs.shape
    h, w = unit_grid((hh, ww), unit)
    x = imgs.reshape(b, c, h, unit, w, unit)
    x = x.permute(0, 2, 4, 3, 5, 1)  # (B, h, w, p, p, C)
    return x.reshape(b, h * w, unit * unit * c)


def unpatchify(x: Tensor, grid_hw: Tuple[int, int], unit: int,
               channels: int = 3) -> Tensor:
    """Inverse of :func:`patchify`: ``(B, L, p*p*C)`` -> ``(B, C, H, W)``.

    Args:
        x (Tensor): Flattened units in row-major order.
        grid_hw (tuple[int, int]): Unit grid ``(Hu, Wu)``.
        unit (int): Mask-unit side in pixels.
        channels (int): Image channels. Defaults to 3.

    Returns:
        Tensor: Images.
    """
    h, w = grid_hw
    if x.shape[1] != h * w or x.shape[2] != unit * unit * channels:
        raise ValueError(
            f'Cannot unpatchify {tuple(x.shape)} into a {h}x{w} grid of '
            f'{unit} px units with {channels} channels.')
    x = x.reshape(x.shape[0], h, w, unit, unit, channels)
    x = x.permute(0, 5, 1, 3, 2, 4)  # (B, C, h, p, w, p)
    return x.reshape(x.shape[0], channels, h * unit, w * unit)
