"""Submanifold sparse convolution on visible tokens (plan, then compute).

A submanifold conv (stride 1, "same" padding) evaluates each visible token
over its visible neighbours only: exactly the dense conv of a map whose
masked positions are zero, read at the visible positions. It reuses the
weights of an ordinary ``nn.Conv2d`` (state-dict keys unchanged).

Two backends:

* ``'gather'``: pure PyTorch, any ``groups`` (depthwise included). A
  neighbour table ``(M, K)`` is planned from the visible coordinates by a
  sorted-key lookup (``searchsorted`` over linear ids), so time and memory
  scale with the ``M`` visible tokens, never with ``H * W``. The compute
  loops over the ``K`` kernel offsets (gather, multiply, accumulate) inside
  a custom autograd function that saves only the input features: one pass
  over the gathered output gradients gives the input gradient (the same
  gather conv with the flipped kernel) and the weight gradient (no
  scatter, no atomics).
* ``'spconv'``: ``spconv.pytorch`` submanifold conv for ordinary convs
  (``groups == 1``); its CPU path needs ``ConvAlgo.Native``.

``'auto'`` picks ``'gather'`` when ``groups > 1`` and ``'spconv'``
otherwise, if it imports.
"""
from dataclasses import dataclass, field
from typing import Any, Dict, Tuple

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from .transfer import to_device

BACKENDS = ('auto', 'gather', 'spconv')
_SPCONV: Dict[str, Any] = {}


@dataclass
class SparseConvPlan:
    """Index tensors of one submanifold conv layout.

    Attributes:
        neighbor_index (Tensor): ``(K, M)`` long; for every kernel offset
            (row-major over the kernel), the row of each token's neighbour,
            ``M`` (a zero row) where it is masked or outside the map.
        coords (Tensor): ``(M, 3)`` int32 ``(batch, row, col)`` of every
            token (spconv's indices).
        spatial_shape (tuple[int, int]): Map size ``(H, W)``.
        batch_size (int): ``B``.
        kernel_size (tuple[int, int]): ``(kh, kw)``, both odd.
        dilation (tuple[int, int]): Kernel dilation.
    """
    neighbor_index: Tensor
    coords: Tensor
    spatial_shape: Tuple[int, int]
    batch_size: int
    kernel_size: Tuple[int, int]
    dilation: Tuple[int, int]
    _spconv_indices: Dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def num_tokens(self) -> int:
        """Visible tokens ``M``."""
        return self.neighbor_index.shape[1]

    def to(self, device: torch.device, non_blocking: bool = False
           ) -> 'SparseConvPlan':
        """Move the index tensors to ``device``."""
        if self.neighbor_index.device == torch.device(device):
            return self
        return SparseConvPlan(
            to_device(self.neighbor_index, device),
            to_device(self.coords, device),
            self.spatial_shape, self.batch_size, self.kernel_size,
            self.dilation)


def _pair(v) -> Tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, int) else tuple(map(int, v))


def plan_sparse_conv(coords: Tensor,
                     hw: Tuple[int, int],
                     kernel_size=3,
                     dilation=1) -> SparseConvPlan:
    """Neighbour table of a submanifold conv over visible tokens.

    Truly sparse: the lookup sorts the ``M`` linear ids
    ``(b * H + row) * W + col`` once and finds every neighbour by binary
    search, ``O(M K log M)`` time and ``O(M K)`` memory.

    Args:
        coords (Tensor): ``(B, N, 2)`` ``(row, col)`` of the visible tokens
            (all distinct within a sample).
        hw (tuple[int, int]): Map size ``(H, W)``.
        kernel_size (int | tuple[int, int]): Odd kernel size. Defaults to 3.
        dilation (int | tuple[int, int]): Dilation. Defaults to 1.

    Returns:
        SparseConvPlan: Rows follow ``coords.reshape(-1, 2)``.
    """
    k, d = _pair(kernel_size), _pair(dilation)
    if k[0] % 2 == 0 or k[1] % 2 == 0:
        raise ValueError(f'A submanifold conv needs an odd kernel, got {k}.')
    if coords.dim() != 3 or coords.shape[-1] != 2:
        raise ValueError('coords must be (B, N, 2) (row, col), got shape '
                         f'{tuple(coords.shape)}.')
    b, n = coords.shape[:2]
    h, w = int(hw[0]), int(hw[1])
    device = coords.device
    rc = coords.reshape(-1, 2).long()  # (M, 2)
    batch = torch.arange(b, device=device).repeat_interleave(n)  # (M,)
    key = (batch * h + rc[:, 0]) * w + rc[:, 1]  # (M,)
    sorted_key, order = key.sort()
    # kernel offsets, row-major: (K, 2)
    dr = (torch.arange(k[0], device=device) - k[0] // 2) * d[0]
    dc = (torch.arange(k[1], device=device) - k[1] // 2) * d[1]
    off = torch.stack(torch.meshgrid(dr, dc, indexing='ij'), -1).view(-1, 2)
    nr = rc[:, None, 0] + off[None, :, 0]  # (M, K)
    nc = rc[:, None, 1] + off[None, :, 1]  # (M, K)
    inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
    nkey = (batch[:, None] * h + nr) * w + nc  # (M, K)
    pos = torch.searchsorted(sorted_key, nkey).clamp_(max=max(b * n - 1, 0))
    found = inside & (sorted_key[pos] == nkey)
    m = b * n
    neighbor = torch.where(found, order[pos], torch.full_like(pos, m))
    neighbor = neighbor.t().contiguous()  # (K, M): one row per offset
    spconv_coords = torch.cat([batch[:, None], rc], 1).int()  # (M, 3)
    return SparseConvPlan(neighbor, spconv_coords, (h, w), b, k, d)


# --------------------------------------------------------------------------
# backend selection
# --------------------------------------------------------------------------
def spconv_available() -> bool:
    """Whether ``spconv.pytorch`` imports."""
    if 'ok' not in _SPCONV:
        try:
            import warnings
            with warnings.catch_warnings():  # its deprecated amp decorators
                warnings.simplefilter('ignore', FutureWarning)
                import spconv.pytorch as spconv
            _SPCONV.update(ok=True, mod=spconv)
        except Exception:  # noqa: BLE001 (missing, or a broken CUDA build)
            _SPCONV['ok'] = False
    return _SPCONV['ok']


def resolve_backend(conv: nn.Conv2d, backend: str = 'auto') -> str:
    """The backend that :func:`sparse_conv2d` will use for ``conv``.

    Args:
        conv (nn.Conv2d): The dense conv.
        backend (str): ``'auto'``, ``'gather'`` or ``'spconv'``.
            Defaults to ``'auto'``.

    Returns:
        str: ``'gather'`` or ``'spconv'``.
    """
    if backend not in BACKENDS:
        raise ValueError(f'sparse_conv_backend must be one of {BACKENDS}, '
                         f'got {backend!r}.')
    if backend == 'auto':
        return 'spconv' if conv.groups == 1 and spconv_available() \
            else 'gather'
    if backend == 'spconv':
        if conv.groups != 1:
            raise ValueError(
                f'The spconv backend has no grouped or depthwise conv '
                f'(groups={conv.groups}); use sparse_conv_backend="gather" '
                f'or "auto".')
        if not spconv_available():
            raise ValueError('sparse_conv_backend="spconv" but spconv.pytorch'
                             ' does not import; install spconv (e.g. '
                             'spconv-cu120) or use "gather".')
    return backend


def check_submanifold(conv: nn.Conv2d) -> None:
    """Raise unless ``conv`` is a stride-1, "same"-padded, odd-kernel conv."""
    k, d = conv.kernel_size, conv.dilation
    same = tuple(di * (ki - 1) // 2 for ki, di in zip(k, d))
    if conv.stride != (1, 1) or k[0] % 2 == 0 or k[1] % 2 == 0 or \
            conv.padding != same or conv.padding_mode != 'zeros':
        raise ValueError(
            'A submanifold sparse conv needs stride 1, an odd kernel and '
            f'zero "same" padding {same}; got kernel {k}, stride '
            f'{conv.stride}, padding {conv.padding} ({conv.padding_mode}).')


# --------------------------------------------------------------------------
# gather backend
# --------------------------------------------------------------------------
def _accumulate(out: Tensor, nb: Tensor, w_k: Tensor) -> None:
    """``out += nb @ W_k`` per group, in place.

    Args:
        out (Tensor): ``(M, C_out)`` accumulator.
        nb (Tensor): ``(M, C_in)`` gathered neighbours at one offset.
        w_k (Tensor): ``(G, C_out/G, C_in/G)`` weight of that offset.
    """
    m = nb.shape[0]
    g, c_og, c_ig = w_k.shape
    if c_og == 1 and c_ig == 1:  # depthwise
        out.addcmul_(nb, w_k.view(1, g))
    elif g == 1:
        out.addmm_(nb, w_k[0].t())
    else:  # (G, M, C_in/G) @ (G, C_in/G, C_out/G) -> (G, M, C_out/G)
        y = torch.bmm(nb.view(m, g, c_ig).transpose(0, 1),
                      w_k.transpose(1, 2))
        out += y.transpose(0, 1).reshape(m, g * c_og)


def _neighbours(feats: Tensor, index: Tensor):
    """Yield ``(k, x[index[k]])`` for every offset, over a zero-padded
    ``x``. One ``(M, C)`` buffer is reused for every offset (a fresh buffer
    per offset costs more in page faults than the gather); the centre
    offset of the odd kernel yields ``feats`` itself."""
    n_k = index.shape[0]
    padded = torch.cat([feats, feats.new_zeros(1, feats.shape[1])], 0)
    buf = torch.empty_like(feats)  # (M, C)
    for k in range(n_k):
        if k == n_k // 2:  # the token itself
            yield k, feats
        else:
            yield k, torch.index_select(padded, 0, index[k], out=buf)


def _gather_conv(feats: Tensor, weight: Tensor, index: Tensor,
                 groups: int) -> Tensor:
    """``out[m] = sum_k W_k x[index[k, m]]`` over a zero-padded ``x``.

    Args:
        feats (Tensor): ``(M, C_in)``.
        weight (Tensor): ``(K, G, C_out/G, C_in/G)``.
        index (Tensor): ``(K, M)``, ``M`` for a zero neighbour.
        groups (int): ``G``.

    Returns:
        Tensor: ``(M, C_out)``.
    """
    n_k, g, c_og, _ = weight.shape
    weight = weight.contiguous()
    out = feats.new_zeros(feats.shape[0], g * c_og)
    for k, nb in _neighbours(feats, index):
        _accumulate(out, nb, weight[k])
    return out


class _GatherConv(torch.autograd.Function):
    """Gather conv whose backward recomputes instead of saving ``K`` copies
    of the gathered input.

    Neighbour ``k`` of ``m`` is ``n``  <=>  neighbour ``K-1-k`` of ``n`` is
    ``m``. So one pass over the gathered output gradients
    ``g_k[n] = dy[index[k, n]]`` gives both gradients: the input gradient
    is the gather conv of ``dy`` with the flipped, transposed kernel
    (``dx[n] += W_{K-1-k}^T g_k[n]``), and the weight gradient is
    ``dW_{K-1-k} = sum_n g_k[n] x[n]^T`` (no scatter, no atomics, and
    ``x`` is never gathered again).
    """

    @staticmethod
    def forward(ctx, feats, weight, bias, index, groups):
        ctx.save_for_backward(feats, weight, index)
        ctx.groups, ctx.has_bias = groups, bias is not None
        out = _gather_conv(feats, weight, index, groups)
        return out if bias is None else out.add_(bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out):
        feats, weight, index = ctx.saved_tensors
        grad_in, grad_w = gather_conv_backward(
            feats, weight, index, grad_out, *ctx.needs_input_grad[:2])
        grad_b = None
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_b = grad_out.sum(0)
        return grad_in, grad_w, grad_b, None, None


def gather_conv_backward(feats: Tensor, weight: Tensor, index: Tensor,
                         grad_out: Tensor, need_in: bool = True,
                         need_w: bool = True):
    """Input and weight gradients of the gather conv in one pass over the
    gathered output gradients (see :class:`_GatherConv`).

    Args:
        feats (Tensor): ``(M, C_in)`` input tokens.
        weight (Tensor): ``(K, G, C_out/G, C_in/G)``.
        index (Tensor): ``(K, M)`` neighbour table, ``M`` for none.
        grad_out (Tensor): ``(M, C_out)``.
        need_in (bool): Compute the input gradient. Defaults to True.
        need_w (bool): Compute the weight gradient. Defaults to True.

    Returns:
        tuple: ``(grad_in (M, C_in) | None, grad_w (K, G, C_out/G, C_in/G)
        | None)``.
    """
    grad_out = grad_out.contiguous()
    n_k, g, c_og, c_ig = weight.shape
    m = feats.shape[0]
    grad_in = feats.new_zeros(m, g * c_ig) if need_in else None
    grad_w = weight.new_empty(n_k, g, c_og, c_ig) if need_w else None
    w_t = weight.flip(0).transpose(2, 3).contiguous()
    x_g = feats.view(m, g, c_ig).transpose(0, 1)  # (G, M, C_in/G)
    prod = None
    if need_in or need_w:
        for k, nb in _neighbours(grad_out, index):  # nb: (M, C_out)
            if need_in:
                _accumulate(grad_in, nb, w_t[k])
            if not need_w:
                continue
            if c_og == 1 and c_ig == 1:  # depthwise
                prod = torch.mul(feats, nb, out=prod)
                grad_w[n_k - 1 - k] = prod.sum(0).view(g, 1, 1)
            else:  # (G, C_out/G, M) @ (G, M, C_in/G)
                grad_w[n_k - 1 - k] = torch.bmm(
                    nb.view(m, g, c_og).permute(1, 2, 0), x_g)
    return grad_in, grad_w


def _gather_backend(conv: nn.Conv2d, feats: Tensor,
                    plan: SparseConvPlan) -> Tensor:
    c_out, c_ig, kh, kw = conv.weight.shape
    g = conv.groups
    # (C_out, C_in/G, kh, kw) -> (K, G, C_out/G, C_in/G), K row-major
    w = conv.weight.to(feats.dtype).view(g, c_out // g, c_ig, kh * kw)
    w = w.permute(3, 0, 1, 2)
    bias = None if conv.bias is None else conv.bias.to(feats.dtype)
    return _GatherConv.apply(feats.contiguous(), w, bias,
                             plan.neighbor_index, g)


# --------------------------------------------------------------------------
# spconv backend
# --------------------------------------------------------------------------
def _spconv_backend(conv: nn.Conv2d, feats: Tensor,
                    plan: SparseConvPlan) -> Tensor:
    spconv = _SPCONV['mod']
    from spconv.pytorch.conv import SparseConvolutionBase
    algo = spconv.ConvAlgo.Native if feats.device.type == 'cpu' else None
    key = f'subm{plan.kernel_size}d{plan.dilation}'
    layer = SparseConvolutionBase(
        2, conv.in_channels, conv.out_channels, list(plan.kernel_size),
        stride=1, padding=list(conv.padding), dilation=list(plan.dilation),
        subm=True, indice_key=key, algo=algo)
    perm = {  # from (C_out, C_in, kh, kw)
        (conv.out_channels, *plan.kernel_size, conv.in_channels): (0, 2, 3,
                                                                   1),
        (*plan.kernel_size, conv.out_channels, conv.in_channels): (2, 3, 0,
                                                                   1),
        (*plan.kernel_size, conv.in_channels, conv.out_channels): (2, 3, 1,
                                                                   0),
    }[tuple(layer.weight_shape)]
    weight = conv.weight.to(feats.dtype).permute(*perm).contiguous()
    bias = None if conv.bias is None else conv.bias.to(feats.dtype)
    cache = plan._spconv_indices.get(str(feats.device), {})
    x = spconv.SparseConvTensor(
        feats.contiguous(), plan.coords, list(plan.spatial_shape),
        plan.batch_size, indice_dict=dict(cache))
    out = layer._conv_forward(torch.is_grad_enabled(), x, weight, bias)
    plan._spconv_indices[str(feats.device)] = out.indice_dict
    return out.features


# --------------------------------------------------------------------------
# public functional
# --------------------------------------------------------------------------
def token_rows(feats: Tensor, num_tokens: int, conv: nn.Module,
               plan_name: str = 'a plan') -> Tensor:
    """``feats`` ``(..., C_in)`` as ``(M, C_in)`` rows, checked against a
    plan of ``num_tokens`` tokens and ``conv``'s input channels."""
    flat = feats.reshape(-1, feats.shape[-1])  # (M, C_in)
    if flat.shape[0] != num_tokens or feats.shape[-1] != conv.in_channels:
        raise ValueError(
            f'feats of shape {tuple(feats.shape)} do not match {plan_name} '
            f'of {num_tokens} tokens and a conv with {conv.in_channels} '
            'input channels.')
    return flat


def sparse_conv2d(conv: nn.Conv2d, feats: Tensor, plan: SparseConvPlan,
                  backend: str = 'auto') -> Tensor:
    """Submanifold sparse conv with the weights of a dense ``nn.Conv2d``.

    Args:
        conv (nn.Conv2d): Stride-1 conv with an odd kernel and "same" zero
            padding (depthwise and grouped allowed with ``'gather'``).
        feats (Tensor): ``(M, C_in)`` or ``(B, N, C_in)`` visible tokens in
            the order of the plan's coordinates.
        plan (SparseConvPlan): From :func:`plan_sparse_conv`, with the
            conv's kernel size and dilation.
        backend (str): ``'auto'``, ``'gather'`` or ``'spconv'``.
            Defaults to ``'auto'``.

    Returns:
        Tensor: Same leading shape as ``feats``, ``C_out`` channels; equal
        to the dense conv of the zero-filled map at the visible tokens.
    """
    check_submanifold(conv)
    if tuple(conv.kernel_size) != tuple(plan.kernel_size) or \
            tuple(conv.dilation) != tuple(plan.dilation):
        raise ValueError(
            f'Plan made for kernel {plan.kernel_size}, dilation '
            f'{plan.dilation}; the conv has kernel {conv.kernel_size}, '
            f'dilation {conv.dilation}.')
    shape = feats.shape
    flat = token_rows(feats, plan.num_tokens, conv)  # (M, C_in)
    if resolve_backend(conv, backend) == 'spconv':
        out = _spconv_backend(conv, flat, plan)
    else:
        out = _gather_backend(conv, flat, plan)
    return out.view(*shape[:-1], conv.out_channels)
