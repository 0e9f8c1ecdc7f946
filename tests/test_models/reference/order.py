"""The token-order contract, written independently of greenmim_mm.

Visible mask units in ascending row-major unit id; inside a unit, Z (Morton)
order with the row bit above the column bit at every level, so the four
tokens of every 2x2 merge group are consecutive in the order (0,0), (0,1),
(1,0), (1,1).
"""
import torch
from torch import Tensor


def morton_positions(side: int) -> Tensor:
    """``(side**2, 2)`` in-unit (row, col) in Z order (row bit first)."""
    bits = max(side - 1, 0).bit_length()
    assert 1 << bits == side, f'unit side {side} is not a power of two'
    pos = [(r, c) for r in range(side) for c in range(side)]

    def key(rc):
        r, c = rc
        k = 0
        for b in range(bits):
            k |= ((r >> b) & 1) << (2 * b + 1)
            k |= ((c >> b) & 1) << (2 * b)
        return k

    return torch.tensor(sorted(pos, key=key), dtype=torch.long)


def row_major_positions(side: int) -> Tensor:
    """``(side**2, 2)`` in-unit (row, col) in row-major order (a wrong
    order, for negative controls)."""
    r, c = torch.meshgrid(torch.arange(side), torch.arange(side),
                          indexing='ij')
    return torch.stack([r.flatten(), c.flatten()], 1)


def valid_map(mask: Tensor, grid, side: int) -> Tensor:
    """``(B, L)`` unit mask (1 = masked) -> ``(B, Hu*side, Wu*side)`` bool,
    True = visible."""
    v = ~mask.bool().reshape(-1, grid[0], grid[1])
    return v.repeat_interleave(side, 1).repeat_interleave(side, 2)


def contract_coords(mask: Tensor, grid, side: int,
                    order: str = 'morton') -> Tensor:
    """``(B, N, 2)`` map (row, col) of every visible token, in the
    contract's order (or row-major inside units with ``order='row'``)."""
    inner = (morton_positions if order == 'morton' else
             row_major_positions)(side)  # (side², 2)
    mask = mask.bool().reshape(mask.shape[0], -1)
    rows = []
    for m in mask:
        units = [u for u in range(m.numel()) if not bool(m[u])]  # ascending
        ur = torch.tensor([u // grid[1] for u in units])
        uc = torch.tensor([u % grid[1] for u in units])
        r = (ur[:, None] * side + inner[None, :, 0]).flatten()
        c = (uc[:, None] * side + inner[None, :, 1]).flatten()
        rows.append(torch.stack([r, c], 1))
    return torch.stack(rows)


def pick_tokens(fmap: Tensor, mask: Tensor, grid,
                order: str = 'morton') -> Tensor:
    """``(B, C, H, W)`` dense map -> ``(B, N, C)`` visible tokens in the
    contract's order; the unit side is read from the map size."""
    side = fmap.shape[-2] // grid[0]
    assert side * grid[0] == fmap.shape[-2] and \
        side * grid[1] == fmap.shape[-1], 'map not aligned to the unit grid'
    rc = contract_coords(mask, grid, side, order)
    b = torch.arange(fmap.shape[0])[:, None]
    return fmap.permute(0, 2, 3, 1)[b, rc[..., 0], rc[..., 1]]
