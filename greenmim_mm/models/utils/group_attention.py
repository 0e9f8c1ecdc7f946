"""Group Window Attention: gather, attend, scatter (no planning here)."""
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .grouping import GroupPlan


def extended_bias_table(table: Tensor) -> Tensor:
    """Append the "blocked" row (-inf) to a relative position bias table.

    Args:
        table (Tensor): ``((2w-1)**2, heads)`` bias table.

    Returns:
        Tensor: ``((2w-1)**2 + 1, heads)``.
    """
    blocked = table.new_full((1, table.shape[1]), float('-inf'))
    return torch.cat([table, blocked], dim=0)


class _GatherBias(torch.autograd.Function):
    """``table[index]`` whose backward is a sparse matmul.

    The default backward (``index_put_`` with accumulation) is the slowest
    non-matmul op of a CPU training step; the plan's CSR scatter matrix
    does the same sum in a fraction of the time. The sum runs in float32
    (MKL's sparse matmul has no bfloat16/float16 kernel, and an fp32 sum of
    many low-precision terms is the better one), also when the backward is
    called inside an autocast block, and returns the table's dtype.
    """

    @staticmethod
    def forward(ctx, table: Tensor, index: Tensor,
                scatter: Tensor) -> Tensor:
        ctx.scatter = scatter
        ctx.table_dtype = table.dtype
        return table[index]  # (*index.shape, heads)

    @staticmethod
    def backward(ctx, grad: Tensor):
        scatter = ctx.scatter
        flat = grad.reshape(-1, grad.shape[-1])  # (M, heads)
        dtype = torch.promote_types(ctx.table_dtype, torch.float32)
        if scatter.dtype != dtype:
            scatter = scatter.to(dtype)
        # a backward called inside an autocast block would autocast the
        # matmul too: keep it in float32
        with torch.autocast(flat.device.type, enabled=False):
            # (T, M) @ (M, heads) -> (T, heads)
            out = scatter @ flat.to(dtype)
        return out.to(ctx.table_dtype), None, None


def gather_bias(table: Tensor, plan: GroupPlan) -> Tensor:
    """Relative position bias of every slot pair of every group.

    Args:
        table (Tensor): ``((2w-1)**2, heads)`` bias table.
        plan (GroupPlan): Grouping of the tokens.

    Returns:
        Tensor: ``(G, heads, g, g)`` additive bias, ``-inf`` across windows.
    """
    table = extended_bias_table(table)  # (T, heads)
    if table.requires_grad and table.device.type == 'cpu':
        bias = _GatherBias.apply(table, plan.rel_index, plan.bias_scatter)
    else:
        bias = table[plan.rel_index]
    return bias.permute(0, 3, 1, 2)  # (G, g, g, heads) -> (G, heads, g, g)


def group_window_attention(w_msa: nn.Module, x: Tensor,
                           plan: GroupPlan) -> Tensor:
    """Windowed self-attention over the visible tokens only.

    Uses the weights of an mmpretrain ``WindowMSA`` (``qkv``, ``proj``,
    ``relative_position_bias_table``, ``scale``) so state-dict keys stay the
    same. Linear layers run on unpadded tokens; padding exists only inside
    the attention call. A module without ``relative_position_bias_table``
    (e.g. Twins' ``LocallyGroupedSelfAttention``) gets the blocking mask
    only, no bias.

    Args:
        w_msa (nn.Module): An mmpretrain ``WindowMSA``, or any module with
            ``qkv``, ``proj``, ``num_heads``, ``scale``, ``attn_drop`` and
            ``proj_drop``.
        x (Tensor): ``(B, N, C)`` normalised visible tokens.
        plan (GroupPlan): Grouping of the tokens.

    Returns:
        Tensor: ``(B, N, C)`` attention output, after the projection.
    """
    b, n, c = x.shape
    heads = w_msa.num_heads
    g, n_groups = plan.group_size, plan.num_groups
    qkv = w_msa.qkv(x).reshape(b * n, 3 * c)  # (B*N, 3C)
    if not plan.identity:
        # (B*N, 3C) -> (G*g, 3C), padded slots are zero
        qkv = qkv.new_zeros(n_groups * g, 3 * c).index_copy_(
            0, plan.token_slot, qkv)
    # (G*g, 3C) -> (3, G, heads, g, C/heads)
    qkv = qkv.view(n_groups, g, 3, heads, c // heads).permute(2, 0, 3, 1, 4)
    q, k, v = qkv.unbind(0)
    table = getattr(w_msa, 'relative_position_bias_table', None)
    if table is not None:
        bias = gather_bias(table, plan).to(q.dtype)
    elif plan.identity:
        bias = None  # one window per group, no padding: nothing to block
    else:  # no position bias (e.g. Twins' LSA): blocking only
        bias = plan.same_window[:, None]  # (G, 1, g, g) bool, True = attend
    drop = w_msa.attn_drop.p if w_msa.training else 0.0
    out = F.scaled_dot_product_attention(
        q, k, v, attn_mask=bias, dropout_p=drop, scale=w_msa.scale)
    out = out.transpose(1, 2).reshape(n_groups * g, c)  # (G*g, C)
    if not plan.identity:
        out = out.index_select(0, plan.token_slot)  # (B*N, C)
    out = w_msa.proj(out.view(b, n, c))
    return w_msa.proj_drop(out)
