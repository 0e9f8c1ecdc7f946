import pytest
import torch

from greenmim_mm.models.utils import (extended_bias_table, gather_bias,
                                      plan_group_attention, random_unit_mask,
                                      token_coords, visible_unit_ids)


def _plan(seed, hw=(28, 28), levels=2, shift=0):
    torch.manual_seed(seed)
    grid = (hw[0] >> levels, hw[1] >> levels)
    mask = random_unit_mask(3, grid, 0.75)
    coords = token_coords(visible_unit_ids(mask), grid[1], levels)
    return plan_group_attention(coords, hw, 7, shift)


@pytest.mark.parametrize('shift', [0, 3])
def test_gather_bias_matches_plain_indexing(shift):
    plan = _plan(0, shift=shift)
    table = torch.randn(13 * 13, 4, dtype=torch.float64, requires_grad=True)
    bias = gather_bias(table, plan)  # sparse-matmul backward on CPU
    g = plan.group_size
    assert bias.shape == (plan.num_groups, 4, g, g)
    ref = extended_bias_table(table)[plan.rel_index].permute(0, 3, 1, 2)
    assert torch.equal(bias, ref)
    # blocked pairs are -inf, the rest finite
    assert torch.equal(torch.isinf(bias),
                       (plan.rel_index == 13 * 13)[:, None].expand_as(bias))
    w = torch.randn_like(ref).masked_fill(torch.isinf(ref), 0)
    grad, = torch.autograd.grad((bias.masked_fill(torch.isinf(bias), 0) * w)
                                .sum(), table)
    grad_ref, = torch.autograd.grad((ref.masked_fill(torch.isinf(ref), 0) * w)
                                    .sum(), table)
    assert torch.allclose(grad, grad_ref, atol=1e-12)


def test_bias_scatter_is_built_once_per_plan():
    plan = _plan(1)
    s = plan.bias_scatter
    assert plan.bias_scatter is s
    # every entry of a real table row is summed exactly once, into its row;
    # blocked pairs (the constant -inf row) are left out
    valid = (plan.rel_index != 13 * 13).reshape(-1)
    assert s.values().numel() == int(valid.sum())
    dense = s.to_dense()
    assert torch.equal(dense.sum(0), valid.float())
    rows = dense.argmax(0)[valid]
    assert torch.equal(rows, plan.rel_index.reshape(-1)[valid].long())
