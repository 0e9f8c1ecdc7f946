import numpy as np
import pytest
import torch
from PIL import Image

from greenmim_mm.models import GreenSwinTransformer
from greenmim_mm.models.utils import token_coords, visible_unit_ids
from greenmim_mm.visualization import (PAD_RGB, draw_grouping, fixed_mask,
                                       group_image, grouping_layouts,
                                       token_image, window_colours)

SMALL = dict(embed_dims=8, depths=[2, 2, 2, 2], num_heads=[1, 1, 1, 1])


@pytest.fixture(scope='module')
def layouts():
    backbone = GreenSwinTransformer(arch=SMALL, img_size=224, window_size=7)
    mask = fixed_mask(1, (7, 7), 0.75, seed=0)
    plans = backbone.make_plans(mask, (224, 224))
    return grouping_layouts(backbone, mask, (224, 224)), plans, mask


def test_one_layout_per_stage_and_shift(layouts):
    lays, plans, _ = layouts
    keys = [(lay.stage, lay.window, lay.shift) for lay in lays]
    assert keys == [(0, 7, 0), (0, 7, 3), (1, 7, 0), (1, 7, 3), (2, 7, 0),
                    (2, 7, 3), (3, 7, 0)]
    for lay in lays:
        plan = plans[lay.stage][(lay.window, lay.shift)]
        assert (lay.num_groups, lay.group_size) == (plan.num_groups,
                                                    plan.group_size)
        assert lay.padding_waste == pytest.approx(plan.padding_waste)
        assert torch.equal(lay.slot, plan.token_slot)
        vis = visible_unit_ids(layouts[2])
        assert torch.equal(lay.coords,
                           token_coords(vis, 7, 3 - lay.stage)[0])
        assert lay.hw == (56 >> lay.stage, ) * 2


def test_layout_matches_window_geometry(layouts):
    for lay in layouts[0]:
        # tokens in one window lie in one (shifted) window square
        band = (lay.coords - lay.shift).div(lay.window, rounding_mode='floor')
        for wid in lay.window_id.unique():
            assert len(band[lay.window_id == wid].unique(dim=0)) == 1
        # and a token sits in its group's row, in a slot of its window
        sw = lay.slot_window.reshape(-1)
        assert torch.equal(sw[lay.slot], lay.window_id)
        counts_tok = torch.bincount(lay.window_id)
        counts_slot = torch.bincount(sw[sw >= 0],
                                     minlength=len(counts_tok))
        assert torch.equal(counts_tok, counts_slot)
        n_pad = int((sw < 0).sum())
        assert n_pad == lay.num_groups * lay.group_size - lay.coords.shape[0]


def test_images(layouts):
    lay = layouts[0][1]
    colours = window_colours(lay.window_id)
    assert len(colours) == len(lay.window_id.unique())
    tok = token_image(lay, colours)
    assert tok.shape == (56, 56, 4)
    assert int((tok[..., 3] > 0).sum()) == lay.coords.shape[0]
    grp = group_image(lay, colours)
    assert grp.shape == (lay.num_groups, lay.group_size, 3)
    pad = (lay.slot_window < 0).numpy()
    assert pad.any()
    is_grey = np.isclose(grp, PAD_RGB).all(-1)
    assert is_grey[pad].all() and not is_grey[~pad].any()


def test_draw_grouping(layouts, tmp_path):
    out = draw_grouping(layouts[0][:2], str(tmp_path / 'g.png'), dpi=40)
    with Image.open(out) as img:
        assert img.size == (9 * 40, round((2.7 * 2 + 0.5) * 40))


def test_one_sample_only():
    backbone = GreenSwinTransformer(arch=SMALL, img_size=64, window_size=2)
    with pytest.raises(ValueError, match='one sample'):
        grouping_layouts(backbone, fixed_mask(2, (2, 2), 0.5), (64, 64))
    from mmpretrain.models import SwinTransformer
    with pytest.raises(TypeError, match='makes no grouping plans'):
        grouping_layouts(SwinTransformer(arch=SMALL, img_size=64),
                         fixed_mask(1, (2, 2), 0.5), (64, 64))
