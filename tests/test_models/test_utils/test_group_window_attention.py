"""Token placement in Group Window Attention: what it keeps for backward."""
import torch
from mmpretrain.models.utils import WindowMSA

from greenmim_mm.models.utils import (group_window_attention,
                                      plan_group_attention, random_unit_mask,
                                      token_coords, visible_unit_ids)
from greenmim_mm.models.utils.group_attention import _FromSlots, _ToSlots


def _plan(batch=3, hw=(28, 28), levels=2, shift=3):
    torch.manual_seed(0)
    grid = (hw[0] >> levels, hw[1] >> levels)
    mask = random_unit_mask(batch, grid, 0.75)
    coords = token_coords(visible_unit_ids(mask), grid[1], levels)
    return plan_group_attention(coords, hw, 7, shift), coords.shape[1]


def test_slot_placement_is_exact_and_its_inverse():
    plan, _ = _plan()
    rows = plan.num_groups * plan.group_size
    src = torch.randn(plan.num_tokens, 6, dtype=torch.float64,
                      requires_grad=True)
    ref = src.new_zeros(rows, 6).index_copy(0, plan.token_slot, src)
    out = _ToSlots.apply(src, plan.token_slot, rows)
    assert torch.equal(out, ref)
    back = _FromSlots.apply(out, plan.token_slot)
    assert torch.equal(back, src)
    w = torch.randn(rows, 6, dtype=torch.float64)
    g, = torch.autograd.grad((out * w).sum(), src)
    g_ref, = torch.autograd.grad((ref * w).sum(), src)
    assert torch.equal(g, g_ref)
    slots = torch.randn(rows, 6, dtype=torch.float64, requires_grad=True)
    v = torch.randn(plan.num_tokens, 6, dtype=torch.float64)
    g, = torch.autograd.grad((_FromSlots.apply(slots, plan.token_slot) * v)
                             .sum(), slots)
    g_ref, = torch.autograd.grad((slots[plan.token_slot] * v).sum(), slots)
    assert torch.equal(g, g_ref)


def test_attention_keeps_no_token_sized_qkv_copy():
    plan, n = _plan()
    attn = WindowMSA(32, (7, 7), 4).double()
    x = torch.randn(3, n, 32, dtype=torch.float64, requires_grad=True)
    shapes = []

    def pack(t):
        shapes.append(tuple(t.shape))
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = group_window_attention(attn, x, plan)
    assert out.shape == x.shape
    # the qkv linear's output is only needed in its padded layout (saved by
    # attention as q, k, v); index_copy_'s autograd would keep it too
    assert (3 * n, 96) not in shapes, shapes
