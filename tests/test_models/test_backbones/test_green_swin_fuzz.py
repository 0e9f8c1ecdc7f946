"""Seeded fuzz: small custom GreenSwinTransformers on random images and
masks against the independent dense reference, float64, forward and every
gradient (windows 2-14, sides 32-448 px, non-square, batch 1-8, any number
of visible units, pad_small_map, several grouping cost models)."""
import random

import pytest
import torch
from mmpretrain.models import SwinTransformer
from reference import swin_reference, valid_map
from reference.compare import audit, twin_copies

from greenmim_mm.models import GreenSwinTransformer

GROUP_COSTS = [(1.0, 32.0), (1.0, 0.0), (0.0, 1.0), (1.0, 512.0)]
QUICK, SLOW = 24, 48  # seeds run by default / only with the slow marker


def draw(seed):
    """A random config, image size, batch and visible-unit count."""
    rng = random.Random(seed)
    window = rng.randint(2, 14)
    hu, wu = rng.randint(1, 14), rng.randint(1, 14)
    if hu == wu and rng.random() < 0.7:  # mostly non-square
        wu = wu % 14 + 1
    budget = max(1, 8 * 49 // (hu * wu))  # keep B * units <= 392
    b = rng.randint(1, min(8, budget))
    n_vis = rng.choice([1, hu * wu, rng.randint(1, hu * wu),
                        rng.randint(1, hu * wu)])  # edges often
    cfg = dict(arch=dict(embed_dims=8, depths=[2, 2, 2, 2],
                         num_heads=[1, 1, 2, 2]),
               window_size=window, out_indices=(0, 1, 2, 3),
               drop_path_rate=0., pad_small_map=rng.random() < 0.5,
               use_abs_pos_embed=rng.random() < 0.2,
               out_after_downsample=rng.random() < 0.2)
    return cfg, rng.choice(GROUP_COSTS), (hu * 32, wu * 32), b, n_vis


def _check(seed):
    cfg, cost, size, b, n_vis = draw(seed)
    green, dense = twin_copies(
        lambda: GreenSwinTransformer(group_cost=cost, **cfg),
        lambda: SwinTransformer(**cfg), seed)
    gen = torch.Generator().manual_seed(seed)
    grid = (size[0] // 32, size[1] // 32)
    L = grid[0] * grid[1]
    mask = torch.stack([torch.randperm(L, generator=gen) >= n_vis
                        for _ in range(b)])
    img = torch.randn(b, 3, *size, generator=gen, dtype=torch.float64)
    audit(green, lambda m, x: m(x, mask), dense,
          lambda m, x: swin_reference(m, x, mask), img,
          valid_map(mask, grid, 32))


def test_the_fuzz_covers_its_ranges():
    draws = [draw(s) for s in range(QUICK)]
    windows = {d[0]['window_size'] for d in draws}
    assert min(windows) <= 3 and max(windows) >= 12
    assert any(d[2][0] != d[2][1] for d in draws)
    assert any(d[0]['pad_small_map'] for d in draws)
    assert any(d[4] == 1 for d in draws)  # one visible unit
    assert any(d[4] == d[2][0] * d[2][1] // 1024 for d in draws)  # none
    assert any(1 < d[4] < d[2][0] * d[2][1] // 1024 for d in draws)
    assert len({d[1] for d in draws}) == len(GROUP_COSTS)
    assert max(d[3] for d in draws) >= 6


@pytest.mark.parametrize('seed', range(QUICK))
def test_fuzz(seed):
    _check(seed)


@pytest.mark.slow
@pytest.mark.parametrize('seed', range(QUICK, QUICK + SLOW))
def test_fuzz_more(seed):
    _check(seed)
