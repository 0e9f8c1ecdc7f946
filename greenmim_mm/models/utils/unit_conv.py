"""Convs whose kernel equals their stride, on whole visible mask units.

Patch embeddings (and Twins' spatial-reduction convs) have kernel = stride,
and their cells lie inside mask units, so on the visible tokens (Morton
order inside each unit, see :mod:`.masking`) they are a reshape plus a
linear layer with the conv's own weights.
"""
import math
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .masking import morton_offsets


def _is_pow2(v: int) -> bool:
    return v >= 1 and v & (v - 1) == 0


def check_cell_conv(conv: nn.Conv2d, name: str) -> int:
    """Raise unless ``conv`` has a square power-of-two kernel equal to its
    stride, no padding, dilation or groups; return the kernel side."""
    k = conv.kernel_size[0]
    if conv.kernel_size != (k, k) or conv.stride != (k, k) or \
            not _is_pow2(k) or conv.padding != (0, 0) or \
            conv.dilation != (1, 1) or conv.groups != 1:
        raise ValueError(
            f'The masked path needs {name} to be a conv whose square '
            f'power-of-two kernel equals its stride (no padding, groups or '
            f'dilation); got kernel {conv.kernel_size}, stride '
            f'{conv.stride}, padding {conv.padding}.')
    return k


def _row_major_slots(k: int, device: Optional[torch.device] = None
                     ) -> Tensor:
    """For each row-major position of a ``k x k`` cell, the Morton slot of
    its token, built on ``device`` (a few tiny ops: no host-device copy)."""
    rc = morton_offsets(int(math.log2(k)), device)  # (k*k, 2), slot -> rc
    return torch.argsort(rc[:, 0] * k + rc[:, 1])  # position -> slot


def conv_on_cells(conv: nn.Conv2d, x: Tensor) -> Tensor:
    """A conv with kernel = stride = ``k`` on tokens in Morton order.

    Each run of ``k * k`` tokens is one whole ``k x k`` cell (cells lie
    inside mask units), so the conv is a linear layer with the conv's
    weight, as a view, on the cells' tokens put in row-major order (only
    the small activations move, never the weight).

    Args:
        conv (nn.Conv2d): Patch embedding or spatial-reduction conv.
        x (Tensor): ``(B, N, C_in)`` tokens, ``N`` a multiple of ``k * k``.

    Returns:
        Tensor: ``(B, N / k**2, C_out)``.
    """
    b, n, c = x.shape
    k = conv.kernel_size[0]
    cells = k * k
    x = x.reshape(b, n // cells, cells, c)  # (B, N/k², k², C), Morton
    if k > 2:  # Morton and row-major orders differ: -> row-major
        x = x.index_select(2, _row_major_slots(k, x.device))
    # (B, N/k², k², C) -> (B, N/k², C·k²), like (C_out, C_in, k, k)
    x = x.transpose(2, 3).reshape(b, n // cells, c * cells)
    return F.linear(x, conv.weight.reshape(conv.out_channels, c * cells),
                    conv.bias)


def embed_visible_units(proj: nn.Conv2d, x: Tensor, vis: Tensor,
                        grid: Tuple[int, int], unit: int) -> Tensor:
    """Patch-embed the visible mask units of images (no norm).

    Args:
        proj (nn.Conv2d): Patch projection, kernel = stride = ``p``.
        x (Tensor): ``(B, C, H, W)`` images.
        vis (Tensor): ``(B, n_vis)`` visible unit ids.
        grid (tuple[int, int]): Unit grid ``(Hu, Wu)``.
        unit (int): Mask unit side in pixels.

    Returns:
        Tensor: ``(B, n_vis * (U/p)**2, C0)``, Morton order in each unit.
    """
    b, c = x.shape[:2]
    # (B, C, Hu*U, Wu*U) -> (B, Hu*Wu, C, U, U)
    units = x.reshape(b, c, grid[0], unit, grid[1], unit).permute(
        0, 2, 4, 1, 3, 5).reshape(b, -1, c, unit, unit)
    idx = vis[:, :, None, None, None].expand(-1, -1, c, unit, unit)
    units = units.gather(1, idx).flatten(0, 1)  # (B*n_vis, C, U, U)
    feat = proj(units)  # (B*n_vis, C0, U/p, U/p)
    side = feat.shape[-1]
    rc = morton_offsets(int(math.log2(side)), x.device)  # (T_u, 2)
    feat = feat.flatten(2)[:, :, rc[:, 0] * side + rc[:, 1]]
    # (B*n_vis, C0, T_u) -> (B, n_vis*T_u, C0)
    return feat.transpose(1, 2).reshape(b, -1, feat.shape[1])
