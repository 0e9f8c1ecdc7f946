"""The relative-position-bias gather of Group Window Attention.

The reference is written from the contract (mmpretrain's ``WindowMSA``:
index ``(dr + w-1) * (2w-1) + (dc + w-1)``, query minus key, pairs of
different windows blocked), not from the module's helpers.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import greenmim_mm.models.utils.bias_gather as bg
from greenmim_mm.models.utils import (bias_reduction, blocking_bias,
                                      gather_bias, plan_group_attention,
                                      plan_unit_windows, random_unit_mask,
                                      token_coords, visible_unit_ids)

aten = torch.ops.aten
W = 7
ROWS = (2 * W - 1)**2


def _plan(seed, hw=(28, 28), levels=2, shift=0, batch=3):
    torch.manual_seed(seed)
    grid = (hw[0] >> levels, hw[1] >> levels)
    mask = random_unit_mask(batch, grid, 0.75)
    coords = token_coords(visible_unit_ids(mask), grid[1], levels)
    return plan_group_attention(coords, hw, W, shift)


def _reference(table, plan):
    """(G, heads, g, g) bias by the contract, -inf across windows."""
    g = plan.group_size
    rc = plan.slot_rc.view(-1, g, 2)
    d = rc[:, :, None, :] - rc[:, None, :, :]  # (G, g, g, 2) query - key
    lab = plan.slot_label.view(-1, g)
    same = lab[:, :, None] == lab[:, None, :]
    idx = ((d[..., 0] + W - 1) * (2 * W - 1) + d[..., 1] + W - 1)
    bias = table[idx.clamp(0, ROWS - 1)].permute(0, 3, 1, 2)
    return bias.masked_fill(~same[:, None], float('-inf'))


@pytest.fixture(params=['csr', 'segment'])
def kind(request, monkeypatch):
    """Run the CPU's CSR backward, or the other devices' segment
    reduction, on the CPU."""
    if request.param == 'segment':
        monkeypatch.setattr(bg, '_uses_csr', lambda device: False)
    return request.param


@pytest.mark.parametrize('shift', [0, 3])
def test_gather_bias_matches_the_contract_forward_and_backward(shift, kind):
    plan = _plan(0, shift=shift)
    table = torch.randn(ROWS, 4, dtype=torch.float64, requires_grad=True)
    bias = gather_bias(table, plan)
    ref = _reference(table, plan)
    assert bias.shape == ref.shape == (plan.num_groups, 4, plan.group_size,
                                       plan.group_size)
    assert torch.equal(bias, ref)
    # weights on every pair but the blocked ones and the padded queries
    # (whose outputs attention drops)
    real = (plan.slot_label >= 0).view(plan.num_groups, 1, -1, 1)
    w = torch.randn_like(ref).masked_fill(torch.isinf(ref) | ~real, 0)
    grad, = torch.autograd.grad(
        (bias.masked_fill(torch.isinf(bias), 0) * w).sum(), table)
    grad_ref, = torch.autograd.grad(
        (ref.masked_fill(torch.isinf(ref), 0) * w).sum(), table)
    assert torch.allclose(grad, grad_ref, rtol=0, atol=1e-12)
    assert kind == ('csr' if isinstance(bias_reduction(plan)[0], torch.Tensor)
                    and bias_reduction(plan)[0].layout == torch.sparse_csr
                    else 'segment')


def test_bias_is_one_aligned_copy_in_the_attention_dtype():
    plan = _plan(1)
    table = torch.randn(ROWS, 4, requires_grad=True)
    bias = gather_bias(table, plan, torch.bfloat16)
    assert bias.dtype == torch.bfloat16
    assert bias.stride(-1) == 1
    assert all(s % bg.ALIGN == 0 for s in bias.stride()[:-1]), bias.stride()
    # the only storage the gather allocates is the padded buffer
    g = plan.group_size
    g_pad = -(-g // bg.ALIGN) * bg.ALIGN
    assert bias.untyped_storage().nbytes() == (
        plan.num_groups * 4 * g * g_pad * 2)
    ref = _reference(table.detach().to(torch.bfloat16), plan)
    assert torch.equal(bias, ref)


def test_blocking_bias_is_shared_and_aligned():
    plan = _plan(2, shift=3)
    m = blocking_bias(plan, torch.float16)
    assert blocking_bias(plan, torch.float16) is m  # one per plan and dtype
    assert m.shape == (plan.num_groups, 1, plan.group_size, plan.group_size)
    assert all(s % bg.ALIGN == 0 for s in m.stride()[:-1]) and \
        m.stride(-1) == 1
    lab = plan.slot_label.view(plan.num_groups, -1)
    same = lab[:, :, None] == lab[:, None, :]
    assert torch.equal(torch.isinf(m[:, 0]), ~same)
    assert torch.equal(m[:, 0][same], torch.zeros(int(same.sum()),
                                                  dtype=torch.float16))


class _Ops(TorchDispatchMode):

    def __init__(self):
        super().__init__()
        self.calls = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.calls.append((func, args, kwargs or {}))
        return func(*args, **(kwargs or {}))

    def accumulating_scatters(self):
        """Indexed scatters with accumulation (their CUDA backward reduces
        duplicate indices serially)."""
        bad = []
        for func, args, kwargs in self.calls:
            name = func.overloadpacket.__name__
            if name in ('index_add', 'index_add_', 'scatter_add',
                        'scatter_add_', 'scatter_reduce', 'scatter_reduce_',
                        'index_reduce', 'index_reduce_', 'bincount',
                        'embedding_dense_backward'):
                bad.append(name)
            elif name in ('index_put', 'index_put_', '_index_put_impl_',
                          'put', 'put_'):
                acc = kwargs.get('accumulate', args[3] if len(args) > 3
                                 else False)
                if acc:
                    bad.append(name)
        return bad

    def names(self):
        return {f.overloadpacket.__name__ for f, _, _ in self.calls}


@pytest.mark.parametrize('device', ['cpu', 'meta'])
def test_bias_backward_has_no_accumulating_scatter_and_no_sync(device):
    torch.manual_seed(3)
    grid, levels, shift = (7, 7), 3, 4  # 56 x 56 map, shifted windows
    mask = random_unit_mask(4, grid, 0.75)
    vis = visible_unit_ids(mask)
    host = plan_unit_windows(vis, (~mask).float().reshape(4, -1), grid,
                             levels, W, shift)
    table = torch.randn(ROWS, 4, device=device, requires_grad=True)
    with _Ops() as ops:  # plan expansion, reduction tables, fwd and bwd
        plan = host.to(device)
        bias = gather_bias(table, plan, torch.float16)
        bias.float().masked_fill(torch.isinf(bias), 0).sum().backward()
    assert table.grad.shape == table.shape
    assert ops.accumulating_scatters() == []
    sync = {'nonzero', 'item', '_local_scalar_dense', 'masked_select',
            'unique_consecutive', '_unique2', 'bincount', 'is_nonzero'}
    assert not (ops.names() & sync), ops.names() & sync
    # the reduction: CSR matmul on a CPU, segment reduction elsewhere
    expected = 'mm' if device == 'cpu' else 'segment_reduce'
    assert expected in ops.names(), ops.names()


def test_audit_catches_an_indexed_scatter():
    """Negative control: plain indexing's backward is caught."""
    plan = _plan(4)
    table = torch.randn(ROWS, 4, requires_grad=True)
    with _Ops() as ops:
        _reference(table, plan).masked_fill(
            torch.isinf(_reference(table.detach(), plan)), 0).sum().backward()
    assert ops.accumulating_scatters()


def test_reduction_is_built_once_per_plan_and_counts_every_pair_once(kind):
    plan = _plan(5, shift=3)
    red = bias_reduction(plan)
    assert bias_reduction(plan) is red
    g = plan.group_size
    if kind == 'csr':
        dense = red[0].to_dense()  # (T, G*g*g)
        per_pair = dense.sum(0)
    else:
        order, lengths = red
        assert int(lengths.sum()) == order.numel() == plan.pairs()
        per_pair = torch.zeros(plan.num_groups * g * g)
        per_pair[order.long()] = 1
    lab = plan.slot_label.view(-1, g)
    real_same = ((lab[:, :, None] == lab[:, None, :])
                 & (lab[:, :, None] >= 0)).reshape(-1)
    assert torch.equal(per_pair, real_same.float())


def test_wrong_table_is_refused():
    plan = _plan(6)
    with pytest.raises(ValueError, match='window of 7 needs 169'):
        gather_bias(torch.zeros(11 * 11, 4), plan)
