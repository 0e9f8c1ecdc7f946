"""Submanifold sparse conv: planning, gather and spconv backends."""
import pytest
import torch
from torch import nn

from greenmim_mm.models.utils import (plan_sparse_conv, random_unit_mask,
                                      resolve_backend, sparse_conv2d,
                                      spconv_available, token_coords,
                                      visible_unit_ids)
from greenmim_mm.models.utils.sparse_conv import check_submanifold

needs_spconv = pytest.mark.skipif(not spconv_available(),
                                  reason='spconv is not installed')


def _tokens(batch=2, grid=(3, 4), levels=2, ratio=0.5, seed=0):
    """Visible-token coordinates of a random unit mask: (B, N, 2), (H, W)."""
    g = torch.Generator().manual_seed(seed)
    mask = random_unit_mask(batch, grid, ratio, generator=g)
    coords = token_coords(visible_unit_ids(mask), grid[1], levels)
    return coords, (grid[0] << levels, grid[1] << levels)


def _dense_reference(conv, feats, coords, hw):
    """Dense conv of the zero-filled map, read at the visible tokens."""
    b, n, c = feats.shape
    bi = torch.arange(b)[:, None].expand(b, n)
    dense = feats.new_zeros(b, *hw, c).index_put(
        (bi, coords[..., 0], coords[..., 1]), feats)  # (B, H, W, C)
    out = conv(dense.permute(0, 3, 1, 2)).permute(0, 2, 3, 1)
    return out[bi, coords[..., 0], coords[..., 1]]  # (B, N, C_out)


def _grads(out, inputs, seed=1):
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed))
    return torch.autograd.grad(out, inputs, g)


def test_plan_is_sparse_and_matches_brute_force():
    coords, hw = _tokens(batch=2, grid=(2, 3), levels=2)
    plan = plan_sparse_conv(coords, hw, 3)
    m = coords.shape[0] * coords.shape[1]
    assert plan.neighbor_index.shape == (9, m)
    flat = coords.reshape(-1, 2)
    batch = torch.arange(2).repeat_interleave(coords.shape[1])
    for i in range(m):
        for k, (dr, dc) in enumerate((r, c) for r in (-1, 0, 1)
                                     for c in (-1, 0, 1)):
            hit = ((batch == batch[i]) & (flat[:, 0] == flat[i, 0] + dr)
                   & (flat[:, 1] == flat[i, 1] + dc)).nonzero()
            want = int(hit[0, 0]) if len(hit) else m
            assert int(plan.neighbor_index[k, i]) == want
    # the centre of the kernel is the token itself
    assert torch.equal(plan.neighbor_index[4], torch.arange(m))


@pytest.mark.parametrize('c_in,c_out,groups,dilation', [
    (8, 8, 8, 1),  # depthwise, as Twins' PEG
    (8, 16, 8, 1),  # depthwise with a channel multiplier
    (8, 12, 4, 1),  # grouped
    (6, 5, 1, 1),  # ordinary
    (8, 8, 8, 2),  # dilated depthwise
])
def test_gather_equals_dense_conv_of_zeroed_map(c_in, c_out, groups,
                                                dilation):
    torch.manual_seed(0)
    coords, hw = _tokens()
    conv = nn.Conv2d(c_in, c_out, 3, padding=dilation, dilation=dilation,
                     groups=groups)
    plan = plan_sparse_conv(coords, hw, 3, dilation)
    x = torch.randn(*coords.shape[:2], c_in, requires_grad=True)
    out = sparse_conv2d(conv, x, plan, backend='gather')
    ref = _dense_reference(conv, x, coords, hw)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)
    params = [x, conv.weight, conv.bias]
    for a, b in zip(_grads(out, params), _grads(ref, params)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_gather_5x5_kernel_and_flat_input():
    torch.manual_seed(0)
    coords, hw = _tokens(levels=3)
    conv = nn.Conv2d(4, 4, 5, padding=2, groups=4)
    plan = plan_sparse_conv(coords, hw, 5)
    x = torch.randn(*coords.shape[:2], 4)
    out = sparse_conv2d(conv, x.reshape(-1, 4), plan, backend='gather')
    ref = _dense_reference(conv, x, coords, hw).reshape(-1, 4)
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


@needs_spconv
def test_spconv_and_gather_agree_forward_and_backward():
    torch.manual_seed(0)
    coords, hw = _tokens(batch=3)
    conv = nn.Conv2d(8, 6, 3, padding=1)
    plan = plan_sparse_conv(coords, hw, 3)
    x = torch.randn(*coords.shape[:2], 8, requires_grad=True)
    params = [x, conv.weight, conv.bias]
    outs = {b: sparse_conv2d(conv, x, plan, backend=b)
            for b in ('gather', 'spconv')}
    torch.testing.assert_close(outs['spconv'], outs['gather'], atol=1e-5,
                               rtol=1e-5)
    for a, b in zip(_grads(outs['spconv'], params),
                    _grads(outs['gather'], params)):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    # the cached spconv indices give the same result on a second call
    again = sparse_conv2d(conv, x, plan, backend='spconv')
    torch.testing.assert_close(again, outs['spconv'])


def test_backend_selection():
    dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    dense = nn.Conv2d(8, 8, 3, padding=1)
    assert resolve_backend(dw, 'auto') == 'gather'
    assert resolve_backend(dense, 'gather') == 'gather'
    assert resolve_backend(dense, 'auto') == (
        'spconv' if spconv_available() else 'gather')
    with pytest.raises(ValueError, match='no grouped or depthwise'):
        resolve_backend(dw, 'spconv')
    with pytest.raises(ValueError, match='sparse_conv_backend must be'):
        resolve_backend(dw, 'dense')


def test_bad_inputs_get_clear_errors():
    coords, hw = _tokens()
    plan = plan_sparse_conv(coords, hw, 3)
    x = torch.randn(*coords.shape[:2], 8)
    with pytest.raises(ValueError, match='odd kernel'):
        plan_sparse_conv(coords, hw, 2)
    with pytest.raises(ValueError, match='submanifold'):
        check_submanifold(nn.Conv2d(8, 8, 3, stride=2, padding=1))
    with pytest.raises(ValueError, match='submanifold'):
        sparse_conv2d(nn.Conv2d(8, 8, 3, padding=0), x, plan)
    with pytest.raises(ValueError, match='do not match a plan'):
        sparse_conv2d(nn.Conv2d(8, 8, 3, padding=1), x[:, :-1], plan)
    with pytest.raises(ValueError, match='Plan made for kernel'):
        sparse_conv2d(nn.Conv2d(8, 8, 5, padding=2), x, plan)


def test_bf16_autocast_runs_in_the_feature_dtype():
    coords, hw = _tokens()
    conv = nn.Conv2d(8, 8, 3, padding=1, groups=8)
    plan = plan_sparse_conv(coords, hw, 3)
    x = torch.randn(*coords.shape[:2], 8)
    out = sparse_conv2d(conv, x.bfloat16(), plan)
    assert out.dtype == torch.bfloat16
    ref = sparse_conv2d(conv, x, plan)
    assert (out.float() - ref).abs().max() < 0.1
