"""Seeded float64 test inputs: images and per-sample random unit masks."""
from typing import Sequence, Tuple

import torch
from torch import Tensor


def unit_grid(size: Sequence[int], unit: int = 32) -> Tuple[int, int]:
    """``(Hu, Wu)`` mask units of an image of ``size = (H, W)``."""
    return size[0] // unit, size[1] // unit


def random_masks(b: int, grid: Sequence[int], n_masked: int,
                 seed: int = 0) -> Tensor:
    """``(B, Hu * Wu)`` bool, 1 = masked, a different random mask per
    sample, ``n_masked`` units each."""
    gen = torch.Generator().manual_seed(seed)
    L = grid[0] * grid[1]
    return torch.stack([torch.randperm(L, generator=gen) < n_masked
                        for _ in range(b)])


def random_images(b: int, size: Sequence[int], seed: int = 0) -> Tensor:
    """``(B, 3, H, W)`` float64 standard normal."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, *size, generator=gen, dtype=torch.float64)
