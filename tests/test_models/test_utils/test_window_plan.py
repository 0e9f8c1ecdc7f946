"""Two-half plans: window-level host work, token-level device work."""
import copy
import pickle

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from greenmim_mm.models.utils import (UnitGroupPlan, effective_shift,
                                      plan_group_attention,
                                      plan_unit_windows, random_unit_mask,
                                      token_coords, unit_window_table,
                                      visible_unit_ids)


class HostOps(TorchDispatchMode):
    """Records every op with the sizes of its tensor arguments/results."""

    def __init__(self):
        super().__init__()
        self.ops = []
        self.numels = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.ops.append(str(func))
        self.numels += [t.numel() for t in tree_flatten((args, kwargs, out))[0]
                        if isinstance(t, torch.Tensor)]
        return out


def _host_half(mask, grid, levels, window, shift, coeffs=(1.0, 32.0)):
    vis = visible_unit_ids(mask)
    return plan_unit_windows(vis, (~mask).float(), grid, levels, window,
                             shift, coeffs)


@pytest.mark.parametrize('grid,levels,window,shift', [
    ((7, 7), 3, 7, 0), ((7, 7), 3, 7, 3), ((6, 9), 2, 6, 3),
    ((7, 7), 1, 7, 3), ((14, 14), 3, 14, 7), ((3, 5), 2, 5, 2),
    ((4, 4), 3, 7, 3)])
def test_unit_plan_equals_token_plan(grid, levels, window, shift):
    """The host/device split gives exactly the layout the token-level
    planner makes from the same tokens (slots, labels, coordinates)."""
    g = torch.Generator().manual_seed(sum(grid) * window + shift)
    masks = [torch.zeros(5, grid[0] * grid[1], dtype=torch.bool)] + [
        random_unit_mask(5, grid, r, generator=g) for r in (0.5, 0.75, 0.9)]
    for mask in masks:
        hw = (grid[0] << levels, grid[1] << levels)
        s = effective_shift(hw, window, shift)
        plan = _host_half(mask, grid, levels, window, s).to('cpu')
        coords = token_coords(visible_unit_ids(mask), grid[1], levels)
        ref = plan_group_attention(coords, hw, window, s, (1.0, 32.0))
        for name in ('token_slot', 'slot_rc', 'slot_label'):
            assert torch.equal(getattr(plan, name), getattr(ref, name)), name
        assert (plan.num_groups, plan.group_size, plan.identity) == (
            ref.num_groups, ref.group_size, ref.identity)


def test_unit_window_table_counts_every_token_once():
    table = unit_window_table((6, 9), 2, 6, 3)  # (54 units, windows)
    assert torch.equal(table.sum(1), torch.full((54, ), 16.0))
    assert float(table.max()) <= 36


def test_host_half_does_no_token_work():
    """No host tensor has a token dimension, and the host runs the same ops
    at batch 4 and 256 (224 px, window 7, Swin-B's first stage)."""
    # static (units, windows) table, built once per process
    table = unit_window_table((7, 7), 3, 7, 3)
    runs = {}
    for batch in (4, 256):
        mask = random_unit_mask(batch, (7, 7), 0.75,
                                generator=torch.Generator().manual_seed(0))
        with HostOps() as rec:
            _host_half(mask, (7, 7), 3, 7, 3)
        runs[batch] = rec
        n_tokens = batch * 12 * 64  # visible tokens of the stage
        sizes = [n for n in rec.numels if n != table.numel()]
        assert max(sizes) < n_tokens // 8, max(sizes)
    assert runs[4].ops == runs[256].ops


def test_expansion_is_cached_per_device_and_pickles_empty():
    mask = random_unit_mask(3, (7, 7), 0.75)
    plan = _host_half(mask, (7, 7), 3, 7, 3)
    assert isinstance(plan, UnitGroupPlan)
    dev = plan.to('cpu')
    assert plan.to('cpu') is dev  # one expansion (and one cache) per device
    assert torch.equal(plan.token_slot, dev.token_slot)  # attribute access
    for clone in (pickle.loads(pickle.dumps(plan)), copy.deepcopy(plan)):
        assert clone._expanded == {}
        assert torch.equal(clone.to('cpu').token_slot, dev.token_slot)
    with pytest.raises(AttributeError):
        plan.no_such_attribute


SWIN_B = dict(type='GreenSwinTransformer', arch='base', img_size=224)
SVT_S = dict(type='GreenSVT', arch='small')


@pytest.mark.parametrize('cfg', [SWIN_B, SVT_S], ids=['swin-b', 'svt-s'])
def test_make_plans_host_work_scales_with_units_not_tokens(cfg):
    """A backbone's ``make_plans`` (the host's share of planning) runs the
    same ops at batch 4 and 64, and no tensor that grows with the batch
    holds as many entries per sample as the visible tokens of stage 1."""
    from mmpretrain.registry import MODELS
    backbone = MODELS.build(cfg)
    runs = {}
    for batch in (4, 64):
        mask = random_unit_mask(batch, (7, 7), 0.75,
                                generator=torch.Generator().manual_seed(1))
        backbone.make_plans(mask, (224, 224))  # static tables are cached
        with HostOps() as rec:
            plans = backbone.make_plans(mask, (224, 224))
        runs[batch] = rec
    assert runs[4].ops == runs[64].ops
    tokens = 12 * 64  # visible tokens of a sample at stage 1
    grown = [big / 64 for small, big in zip(runs[4].numels, runs[64].numels)
             if big != small]
    assert grown and max(grown) < tokens / 4, max(grown)
    # and the device half gives the layout the token-level planner gives
    for stage_plans in plans:
        for p in stage_plans.values():
            if p is not None:
                assert p.to('cpu') is p.to('cpu')


def test_unit_sparse_conv_plan_equals_host_plan():
    from greenmim_mm.models.utils import UnitSparseConvPlan, plan_sparse_conv
    mask = random_unit_mask(3, (5, 6), 0.6)
    vis = visible_unit_ids(mask)
    lazy = UnitSparseConvPlan(vis, 6, 2, (20, 24), (3, 3), (1, 1))
    ref = plan_sparse_conv(token_coords(vis, 6, 2), (20, 24), 3, 1)
    dev = lazy.to('cpu')
    assert lazy.to('cpu') is dev
    assert torch.equal(dev.neighbor_index, ref.neighbor_index)
    assert torch.equal(dev.coords, ref.coords)
    assert pickle.loads(pickle.dumps(lazy))._built == {}
