import pytest
import torch

from greenmim_mm.models.utils import (check_mask_ratio, morton_offsets,
                                      num_visible_units, random_unit_mask,
                                      restore_ids, token_coords, unit_grid,
                                      visible_unit_ids)


def test_unit_grid_accepts_multiples_and_rejects_others():
    assert unit_grid((224, 224), 32) == (7, 7)
    assert unit_grid((192, 256), 32) == (6, 8)
    with pytest.raises(ValueError, match='not a multiple of the mask unit'):
        unit_grid((225, 224), 32)
    with pytest.raises(ValueError, match='32 px'):
        unit_grid((224, 100), 32)


@pytest.mark.parametrize('ratio', [0, 1, -0.1, 1.5, True, 'a'])
def test_mask_ratio_outside_open_interval_is_rejected(ratio):
    with pytest.raises(ValueError, match='mask_ratio'):
        check_mask_ratio(ratio)


def test_ratio_leaving_no_visible_unit_is_rejected():
    with pytest.raises(ValueError, match='no visible'):
        num_visible_units(4, 0.99)


def test_random_mask_is_per_sample_with_equal_counts():
    torch.manual_seed(0)
    mask = random_unit_mask(64, (7, 7), 0.75)
    assert mask.shape == (64, 49) and mask.dtype == torch.bool
    assert ((~mask).sum(1) == 12).all()  # int(49 * 0.25)
    assert len({tuple(m.tolist()) for m in mask}) > 60  # independent masks


def test_visible_and_restore_ids_invert_each_other():
    mask = random_unit_mask(5, (4, 6), 0.5)
    vis = visible_unit_ids(mask)
    assert (vis.diff(dim=1) > 0).all()
    assert (~mask.gather(1, vis)).all()
    ids_restore = restore_ids(mask)
    shuffled = mask.to(torch.uint8).argsort(dim=1, stable=True)
    assert torch.equal(shuffled.gather(1, ids_restore),
                       torch.arange(24).expand(5, -1))


def test_unequal_visible_counts_are_rejected():
    mask = torch.tensor([[1, 0, 0, 1], [1, 1, 0, 1]], dtype=torch.bool)
    with pytest.raises(ValueError, match='same number of visible'):
        visible_unit_ids(mask)


def test_morton_order_groups_merge_blocks():
    offs = morton_offsets(3)
    assert offs.shape == (64, 2)
    assert len({tuple(o) for o in offs.tolist()}) == 64
    # every 4 consecutive tokens form one 2x2 block in (0,0),(0,1),(1,0),(1,1)
    blocks = offs.view(16, 4, 2)
    base = blocks[:, :1] // 2 * 2
    assert torch.equal(blocks - base,
                       torch.tensor([[0, 0], [0, 1], [1, 0], [1, 1]]).expand(
                           16, 4, 2))
    # and merging them (coords // 2) gives Morton order of the next level
    assert torch.equal(blocks[:, 0] // 2, morton_offsets(2))


def test_token_coords_cover_visible_units_only():
    mask = random_unit_mask(2, (3, 5), 0.6)
    vis = visible_unit_ids(mask)
    rc = token_coords(vis, 5, 2)  # units of 4x4 tokens
    assert rc.shape == (2, vis.shape[1] * 16, 2)
    unit = (rc[..., 0] // 4) * 5 + rc[..., 1] // 4
    assert (~mask.gather(1, unit)).all()
