"""Relative position bias of Group Window Attention: one gathered copy per
block, a duplicate-free backward.

Forward: the ``((2w-1)**2, heads)`` table is cast to the attention dtype
(it is tiny) and gathered once into a ``(heads, G, g, g_pad)`` buffer whose
last dimension is padded to a multiple of :data:`ALIGN`; pairs of different
windows are then set to ``-inf`` with the plan's ``blocked`` mask (no shared
"blocked" table row). The block receives the ``(G, heads, g, g)`` view of
that buffer. Its strides are multiples of :data:`ALIGN`, so the memory-
efficient attention kernel of a GPU takes it as it is: no cast copy, no
padded copy, one saved bias per block.

Backward: the gradient of the table is a reduction of the bias gradient
over the pairs that read each row. The pairs are sorted by row once per
plan (the number of pairs, ``GroupPlan.num_pairs``, is known on the host,
so every shape is static and nothing syncs), and the sum runs as

* on a CPU: a CSR ``(T, G*g*g)`` 0/1 matrix times the gradient (MKL's
  sparse matmul, the fastest CPU reduction);
* on any other device (CUDA, meta): ``torch.segment_reduce`` over a 1-D
  array (one segment per table row and head), which CUDA runs as CUB's
  segmented reduction, a parallel reduction per segment (see
  ``aten/src/ATen/native/cuda/SegmentReduce.cu``: 1-D data takes the CUB
  path, more dimensions a serial loop per output).

Neither is an indexed scatter with accumulation (``index_put_``/
``index_add_``), whose CUDA backward reduces each duplicate index serially.
Sums run in float32 (or the table's dtype when wider).
"""
import contextlib
import warnings
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

from .grouping import GroupPlan

#: alignment (elements) of the bias buffer's strides: the memory-efficient
#: attention kernel copies a mask whose strides are not multiples of its
#: alignment (``preprocess_mask`` in aten/src/ATen/native/transformers/
#: cuda/attention.cu: 8 in torch 2.13, 16 in older releases; 16 fits both)
ALIGN = 16


def _uses_csr(device: torch.device) -> bool:
    """Whether the bias backward on ``device`` is the CSR matmul (else the
    segment reduction)."""
    return device.type == 'cpu'


def relative_index(coords: Tensor, labels: Tensor, window: int,
                   align: int = ALIGN) -> Tuple[Tensor, Tensor]:
    """Relative-position-bias index between all slots of each group.

    Args:
        coords (Tensor): ``(G, g, 2)`` slot ``(row, col)``.
        labels (Tensor): ``(G, g)`` window label; slots attend each other
            only when their labels are equal.
        window (int): Window size ``w``.
        align (int): The last dimension is padded to a multiple of it.
            Defaults to :data:`ALIGN`.

    Returns:
        tuple[Tensor, Tensor]: ``(G, g, g_pad)`` int32 index into the
        ``(2w-1)**2``-row table (query minus key, as mmpretrain's
        ``WindowMSA``; 0 where blocked), and ``(G, g, g_pad)`` bool
        ``blocked``: True for pairs of different windows and for the padded
        columns.
    """
    g = labels.shape[1]
    pad = -g % align
    span = 2 * window - 1
    # (dr + w-1) * span + (dc + w-1) = key_q - key_k + (w-1) * (span + 1)
    key = (coords[..., 0] * span + coords[..., 1]).int()  # (G, g)
    idx = key[:, :, None] - key[:, None, :] + (window - 1) * (span + 1)
    blocked = labels[:, :, None] != labels[:, None, :]  # (G, g, g)
    idx = F.pad(idx.masked_fill_(blocked, 0), (0, pad))  # (G, g, g_pad)
    return idx, F.pad(blocked, (0, pad), value=True)


def bias_index(plan: GroupPlan) -> Tuple[Tensor, Tensor]:
    """:func:`relative_index` of a plan, built once on its device and kept
    in ``plan.cache``."""
    if 'bias_index' not in plan.cache:
        g = plan.group_size
        plan.cache['bias_index'] = relative_index(
            plan.slot_rc.view(-1, g, 2), plan.slot_label.view(-1, g),
            plan.window)
    return plan.cache['bias_index']


def bias_reduction(plan: GroupPlan) -> Tuple[Tensor, ...]:
    """The backward reduction of a plan's bias gather, built once on its
    device (static shapes, no sync) and kept in ``plan.cache``.

    Returns:
        tuple[Tensor, ...]: On a CPU ``(csr,)``, the ``(T, G*g*g)`` 0/1
        CSR matrix; elsewhere ``(order, lengths)``: ``(num_pairs,)`` int32
        positions (in ``(G, g, g)`` order) of the unblocked pairs sorted by
        table row, and ``(T,)`` pairs per row.
    """
    if 'bias_reduction' not in plan.cache:
        idx, blocked = bias_index(plan)
        g, rows = plan.group_size, (2 * plan.window - 1)**2
        nnz = plan.pairs()
        # blocked pairs and padded queries (which only see themselves and
        # whose output is dropped) sort last (key = rows), then are cut off
        pad = plan.slot_label.view(-1, g, 1) < 0  # (G, g, 1)
        keys = idx[..., :g].masked_fill(blocked[..., :g] | pad, rows)
        keys = keys.reshape(-1)  # (M,) M = G*g*g
        keys, order = keys.sort(stable=True)
        keys, order = keys[:nnz], order[:nnz]  # (nnz,)
        crow = torch.searchsorted(  # (T+1,) start of each row
            keys, torch.arange(rows + 1, dtype=keys.dtype,
                               device=keys.device))
        if _uses_csr(idx.device):
            with warnings.catch_warnings():  # "CSR support is in beta"
                warnings.simplefilter('ignore', UserWarning)
                red = (torch.sparse_csr_tensor(
                    crow, order, torch.ones(nnz, device=idx.device),
                    (rows, idx.shape[0] * g * g)), )
        else:
            red = (order.int(), crow.diff())
        plan.cache['bias_reduction'] = red
    return plan.cache['bias_reduction']


def blocking_bias(plan: GroupPlan, dtype: torch.dtype) -> Tensor:
    """Additive mask of attention without a position bias (e.g. Twins'
    LSA): 0 within a window, ``-inf`` across, in the attention dtype.

    Built once per plan and dtype on the plan's device and shared by every
    block that uses the plan (so it is saved once), in a buffer whose
    strides are multiples of :data:`ALIGN` (no copy by the kernel). A
    boolean mask would be converted to a new float mask by every call.

    Returns:
        Tensor: ``(G, 1, g, g)`` view of a ``(G, 1, g, g_pad)`` buffer.
    """
    key = f'blocking_bias_{dtype}'
    if key not in plan.cache:
        lab = plan.slot_label.view(-1, plan.group_size)  # (G, g)
        g = lab.shape[1]
        blocked = F.pad(lab[:, :, None] != lab[:, None, :], (0, -g % ALIGN),
                        value=True)  # (G, g, g_pad)
        mask = torch.zeros(blocked.shape, dtype=dtype, device=lab.device)
        plan.cache[key] = mask.masked_fill_(blocked, float('-inf'))[
            :, None, :, :g]
    return plan.cache[key]


def prepare_bias(plan: GroupPlan) -> None:
    """Build a plan's bias index and backward reduction now (e.g. ahead of
    the forward); both are reused by every block that shares the plan."""
    bias_index(plan)
    bias_reduction(plan)


class _GatherBias(torch.autograd.Function):
    """``table[index]`` masked to ``-inf`` where blocked, in one padded
    buffer; its backward is the plan's prepared reduction."""

    @staticmethod
    def forward(ctx, table: Tensor, plan: GroupPlan,
                dtype: torch.dtype) -> Tensor:
        idx, blocked = bias_index(plan)  # (G, g, g_pad)
        ctx.plan, ctx.table_dtype = plan, table.dtype
        n_groups, g, g_pad = idx.shape
        # (T, heads) -> (heads, T) -> (heads, G*g*g_pad): the only copy
        out = table.t().to(dtype).index_select(1, idx.view(-1))
        out = out.view(-1, n_groups, g, g_pad).masked_fill_(
            blocked, float('-inf'))
        # (heads, G, g, g_pad) -> (G, heads, g, g), strides multiple of ALIGN
        return out.permute(1, 0, 2, 3)[..., :g]

    @staticmethod
    def backward(ctx, grad: Tensor):
        plan = ctx.plan
        red = bias_reduction(plan)
        rows = (2 * plan.window - 1)**2
        dtype = torch.promote_types(ctx.table_dtype, torch.float32)
        heads = grad.shape[1]
        # a backward called inside an autocast block must not autocast
        dev = grad.device.type
        with (torch.autocast(dev, enabled=False)
              if torch.amp.is_autocast_available(dev)
              else contextlib.nullcontext()):
            if len(red) == 1:  # CPU: (T, M) @ (M, heads) -> (T, heads)
                csr = red[0]
                flat = grad.permute(0, 2, 3, 1).reshape(-1, heads)
                out = csr.to(dtype) @ flat.to(dtype)
            else:
                order, lengths = red
                # (G, heads, g, g) -> (heads, G*g*g) -> (heads, nnz) -> 1-D
                flat = grad.transpose(0, 1).reshape(heads, -1).to(dtype)
                data = flat.index_select(1, order).reshape(-1)
                out = torch.segment_reduce(  # (heads*T,) -> (T, heads)
                    data, 'sum', lengths=lengths.repeat(heads),
                    axis=0).view(heads, rows).t()
        return out.to(ctx.table_dtype), None, None


def gather_bias(table: Tensor, plan: GroupPlan,
                dtype: torch.dtype = None) -> Tensor:
    """Relative position bias of every slot pair of every group.

    Args:
        table (Tensor): ``((2w-1)**2, heads)`` bias table.
        plan (GroupPlan): Grouping of the tokens.
        dtype (torch.dtype, optional): Dtype of the bias (the attention's).
            Defaults to the table's.

    Returns:
        Tensor: ``(G, heads, g, g)`` additive bias, ``-inf`` across windows;
        a view of a buffer whose strides are multiples of :data:`ALIGN`.
    """
    rows = (2 * plan.window - 1)**2
    if table.shape[0] != rows:
        raise ValueError(
            f'relative_position_bias_table has {table.shape[0]} rows; a '
            f'window of {plan.window} needs {rows}')
    return _GatherBias.apply(table, plan, dtype or table.dtype)
