"""Resize Swin relative-position-bias tables with torch (any SciPy).

mmpretrain 1.2.0 resizes these tables in a load hook with
``scipy.interpolate.interp2d``, which SciPy >= 1.14 removed, so a checkpoint
pretrained with one window (SimMIM: 6, GreenMIM: 7) cannot be loaded into a
model with another (7 or 14). :func:`resize_rel_pos_bias_table` does the
resize with bicubic interpolation of the ``(2w-1) x (2w-1)`` grid of each
head (``align_corners=True``, as timm does), so the corners of the grid,
the biases of the largest offsets, are kept exactly; called before
``load_state_dict`` it leaves mmpretrain's hook nothing to do.
Paper: https://arxiv.org/abs/2205.13515
"""
import math

import torch
import torch.nn.functional as F


def bias_table_window(shape: torch.Size, key: str = 'table') -> int:
    """The window ``w`` of a ``((2w-1)^2, heads)`` bias table.

    Args:
        shape (torch.Size): Shape of the table.
        key (str): Name used in errors. Defaults to 'table'.

    Returns:
        int: The window size ``w``.

    Raises:
        ValueError: If the table is not 2-D with ``(2w-1)^2`` rows.
    """
    if len(shape) != 2:
        raise ValueError(f'{key}: a relative position bias table is '
                         f'((2w-1)^2, heads), got shape {tuple(shape)}.')
    side = math.isqrt(shape[0])
    if side * side != shape[0] or side % 2 == 0:
        raise ValueError(f'{key}: {shape[0]} rows are not (2w-1)^2 for any '
                         f'window w (shape {tuple(shape)}).')
    return (side + 1) // 2


def resize_rel_pos_bias_table(table: torch.Tensor, window: int,
                              key: str = 'table') -> torch.Tensor:
    """Resize a bias table to another window by bicubic interpolation.

    Args:
        table (torch.Tensor): ``((2w_src-1)^2, heads)`` table.
        window (int): Target window ``w_dst``.
        key (str): Name used in errors. Defaults to 'table'.

    Returns:
        torch.Tensor: ``((2w_dst-1)^2, heads)`` table, same dtype and device
        (the input itself when the window is unchanged).

    Raises:
        ValueError: If ``table`` is not a bias table.
    """
    src = bias_table_window(table.shape, key)
    if src == window:
        return table
    s_src, s_dst = 2 * src - 1, 2 * window - 1
    heads = table.shape[1]
    dtype = table.dtype
    work = torch.float64 if dtype == torch.float64 else torch.float32
    # (s_src*s_src, H) -> (1, H, s_src, s_src)
    grid = table.to(work).t().reshape(1, heads, s_src, s_src)
    grid = F.interpolate(grid, size=(s_dst, s_dst), mode='bicubic',
                         align_corners=True)
    # (1, H, s_dst, s_dst) -> (s_dst*s_dst, H)
    return grid.reshape(heads, s_dst * s_dst).t().contiguous().to(dtype)
