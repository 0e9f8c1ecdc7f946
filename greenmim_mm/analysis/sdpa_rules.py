"""The rules of PyTorch's attention-kernel chooser on a CUDA GPU, for
calls described by metadata only (no GPU needed).

:func:`check_backends` re-implements, for dense inputs on one CUDA device,
the filters of ``sdp::select_sdp_backend``
(``aten/src/ATen/native/transformers/cuda/sdp_utils.cpp``, filters shared
with the CPU in ``sdp_utils_cpp.h``, as installed with torch 2.13 under
``torch/include/ATen/native/transformers/``). Each filter is a function
below named as in PyTorch, with its rule in its docstring. The priority
order is cuDNN, flash, memory-efficient, math on sm_90 with cuDNN > 9.15 in a
CUDA 13 build (``check_prefer_cudnn_attention`` / ``priority_order``; the
torch 2.13 CUDA 13 wheel ships cuDNN 9.20), flash, memory-efficient, math,
cuDNN otherwise (``at::globalContext().sDPPriorityOrder()``).

:func:`mask_copies` follows ``scaled_dot_product_attention`` in
``aten/src/ATen/native/transformers/attention.cpp`` after the choice: a
boolean mask becomes an additive one (``convert_boolean_attn_mask``: a new
tensor); for the memory-efficient kernel, ``preprocess_mask`` keeps the bias
only when ``aligned_tensor<8>`` holds (every stride but the last a multiple
of 8, the last stride 1) and otherwise ``pad_bias<8>`` copies it into a
buffer whose last dimension is padded by ``8 - S % 8`` (8 when already a
multiple) and slices it back: that copy is saved for backward.
"""
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import torch

#: backends in the order :func:`check_backends` reports them
BACKENDS = ('cudnn', 'flash', 'efficient', 'math')


@dataclass(frozen=True)
class TensorInfo:
    """What the kernel chooser reads of a tensor."""
    shape: Tuple[int, ...]
    stride: Tuple[int, ...]
    dtype: torch.dtype
    storage_offset: int = 0
    requires_grad: bool = False

    @classmethod
    def of(cls, t: torch.Tensor, dtype: Optional[torch.dtype] = None
           ) -> 'TensorInfo':
        """``t``'s metadata, its dtype replaced by ``dtype`` (an autocast
        cast keeps the strides; it makes a new tensor, offset 0)."""
        if dtype is not None and dtype != t.dtype:
            return cls(tuple(t.shape), tuple(t.stride()), dtype, 0,
                       t.requires_grad)
        return cls(tuple(t.shape), tuple(t.stride()), t.dtype,
                   t.storage_offset(), t.requires_grad)

    @property
    def dim(self) -> int:
        return len(self.shape)

    @property
    def element_size(self) -> int:
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


@dataclass(frozen=True)
class SdpaCall:
    """One ``scaled_dot_product_attention`` call, as the chooser sees it."""
    query: TensorInfo
    key: TensorInfo
    value: TensorInfo
    attn_mask: Optional[TensorInfo] = None
    dropout_p: float = 0.0
    is_causal: bool = False
    scale: Optional[float] = None
    enable_gqa: bool = False
    grad_enabled: bool = True
    site: str = ''

    @property
    def input_requires_grad(self) -> bool:
        """``input_requires_grad`` (sdp_utils_cpp.h): q, k or v requires
        grad and grad mode is on."""
        return self.grad_enabled and (self.query.requires_grad
                                      or self.key.requires_grad
                                      or self.value.requires_grad)


@dataclass(frozen=True)
class Device:
    """The GPU and library versions the choice depends on.

    Defaults: an H100/H200 (sm_90) with the torch 2.13 CUDA 13 wheel's
    cuDNN 9.20, every backend enabled, no deterministic mode.
    """
    major: int = 9
    minor: int = 0
    cudnn_version: int = 92000
    cuda_version: int = 13000
    fa3_enabled: bool = False
    enabled: Tuple[str, ...] = BACKENDS


H100 = Device()

# --------------------------------------------------------------------------
# filters: each returns '' when it passes, else the reason
# --------------------------------------------------------------------------


def check_tensor_shapes(c: SdpaCall, d: Device) -> str:
    """q, k and v are all 4-D."""
    if not c.query.dim == c.key.dim == c.value.dim == 4:
        return f'q/k/v must be 4-D (got {c.query.dim}-D)'
    return ''


def check_batch_size_and_num_heads_dense(c: SdpaCall, d: Device) -> str:
    """Same batch size; same number of heads (no GQA requested)."""
    q, k, v = c.query.shape, c.key.shape, c.value.shape
    if not q[0] == k[0] == v[0]:
        return 'q/k/v batch sizes differ'
    if c.enable_gqa:
        if k[-3] != v[-3] or q[-3] % k[-3]:
            return 'GQA needs kv heads dividing q heads'
    elif not q[-3] == k[-3] == v[-3]:
        return 'q/k/v head counts differ'
    return ''


def check_nonzero_sequence_lengths_dense(c: SdpaCall, d: Device) -> str:
    """Neither sequence length is 0."""
    if c.query.shape[-2] == 0 or c.key.shape[-2] == 0:
        return 'zero sequence length'
    return ''


def check_last_dim_stride_equals_1_dense(c: SdpaCall, d: Device,
                                         ignore_singleton_dim: bool) -> str:
    """Last stride of q, k, v is 1 (or head dim 1 when
    ``ignore_singleton_dim``), and on a GPU the mask's last stride is 1
    ("GPU backends require attn_mask's last dimension to have stride 1")."""
    ok = all(t.stride[-1] == 1 for t in (c.query, c.key, c.value))
    if ignore_singleton_dim:
        ok = ok or c.query.shape[-1] == 1
    if not ok:
        return 'q/k/v last-dim stride is not 1'
    if c.attn_mask is not None and c.attn_mask.stride[-1] != 1:
        return (f'attn_mask last-dim stride {c.attn_mask.stride[-1]} != 1 '
                '(GPU kernels need 1)')
    return ''


def check_for_attn_mask(c: SdpaCall, d: Device) -> str:
    """Flash takes no ``attn_mask``."""
    return 'flash takes no attn_mask' if c.attn_mask is not None else ''


def check_attn_mask_shape(c: SdpaCall, d: Device) -> str:
    """cuDNN: the mask does not require grad; its last two dims equal
    ``(L, S)`` or are 1; it is 2-D, or 4-D with batch/heads equal or 1."""
    m = c.attn_mask
    if m is None:
        return ''
    if m.requires_grad:
        return 'attn_mask requires grad'
    b, h, lq = c.query.shape[0], c.query.shape[1], c.query.shape[2]
    lk = c.key.shape[2]

    def fits(x, n):
        return x == n or x == 1

    if not (fits(m.shape[-2], lq) and fits(m.shape[-1], lk)):
        return f'attn_mask shape {m.shape} does not match (L, S)'
    if m.dim == 2 or (m.dim == 4 and fits(m.shape[0], b)
                      and fits(m.shape[1], h)):
        return ''
    return f'attn_mask must be 2-D or 4-D (B|1, H|1, L|1, S|1), got {m.shape}'


def check_tensor_dtype(c: SdpaCall, allowed: Tuple[torch.dtype, ...]) -> str:
    """q, k, v share one dtype from ``allowed``."""
    dt = c.query.dtype
    if not (dt == c.key.dtype == c.value.dtype and dt in allowed):
        return f'dtype {dt} not in {[str(a) for a in allowed]}'
    return ''


def check_sm_version(d: Device, lo: Tuple[int, int], hi: Tuple[int, int],
                     name: str) -> str:
    """``check_*_hardware_support``: the compute capability in
    ``[lo, hi]``."""
    if not lo <= (d.major, d.minor) <= hi:
        return f'{name} needs sm{lo[0]}{lo[1]}-sm{hi[0]}{hi[1]}'
    return ''


def check_head_dim_size_flash(c: SdpaCall, d: Device) -> str:
    """Flash: q, k, v have the same head dim, at most 256."""
    e = (c.query.shape[-1], c.key.shape[-1], c.value.shape[-1])
    if not (e[0] == e[1] == e[2] and e[0] <= 256):
        return f'flash needs equal head dims <= 256, got {e}'
    return ''


def minimum_gemm_alignment(c: SdpaCall, d: Device) -> int:
    """Elements: 4 on sm >= 80, at least 128 bits (8 halves, 4 floats) with
    tensor cores (sm >= 80; sm7x for halves)."""
    half = c.query.dtype in (torch.float16, torch.bfloat16)
    use_tc = d.major >= 8 or (d.major >= 7 and half)
    align = 4 if d.major >= 8 else 1
    if use_tc:
        align = max(align, 128 // (16 if half else 32))
    return align


def check_head_dim_size_mem_efficient(c: SdpaCall, d: Device) -> str:
    """Memory-efficient: q and k head dims equal; q and v head dims
    positive multiples of :func:`minimum_gemm_alignment`."""
    a = minimum_gemm_alignment(c, d)
    eq, ek, ev = c.query.shape[-1], c.key.shape[-1], c.value.shape[-1]
    if not (eq == ek and eq % a == 0 and eq > 0 and ev % a == 0 and ev > 0):
        return f'head dims ({eq}, {ek}, {ev}) not multiples of {a}'
    return ''


def check_data_ptr_alignment_mem_efficient(c: SdpaCall, d: Device) -> str:
    """Memory-efficient on sm >= 80: ``storage_offset * element_size`` of
    q, k, v is a multiple of ``alignment * element_size`` bytes (the
    caching allocator aligns base pointers to >= 256 bytes)."""
    if d.major < 8:
        return ''
    nbytes = minimum_gemm_alignment(c, d) * c.query.element_size
    for name, t in (('q', c.query), ('k', c.key), ('v', c.value)):
        if t.numel and (t.storage_offset * t.element_size) % nbytes:
            return f'{name} storage offset not {nbytes}-byte aligned'
    return ''


def check_cudnn_tensor_shapes(c: SdpaCall, d: Device) -> str:
    """cuDNN: batch and heads <= 65535; head dims <= 128 (256 on sm90/10x
    with cuDNN > 9.22, 192/128 with cuDNN >= 9.11) and multiples of 8;
    key length != 1; no dropout with query length 1."""
    b, h, s_q, d_qk = c.query.shape
    s_k, d_v = c.key.shape[2], c.value.shape[3]
    if b > 65535 or h > 65535:
        return 'cuDNN needs batch and heads <= 65535'
    sm90_10x = (d.major == 9 and d.minor == 0) or d.major == 10
    limit = 128
    if sm90_10x and d.cudnn_version > 92200:
        limit = 256
    elif sm90_10x and d.cudnn_version >= 91100 and (d_qk, d_v) == (192, 128):
        limit = 192
    if d_qk > limit or d_v > limit:
        return f'cuDNN head dim > {limit}'
    if d_qk % 8 or d_v % 8:
        return 'cuDNN head dim not a multiple of 8'
    if s_k == 1:
        return 'cuDNN needs key length != 1'
    if c.dropout_p != 0.0 and s_q == 1:
        return 'cuDNN: no dropout with query length 1'
    return ''


def check_cudnn_dropout(c: SdpaCall, d: Device) -> str:
    """cuDNN dropout is a multiple of 1/16 (and not on cuDNN 9.11-9.13)."""
    if c.dropout_p * 16.0 != int(c.dropout_p * 16.0):
        return 'cuDNN dropout must be a multiple of 1/16'
    if c.dropout_p > 0 and 91100 < d.cudnn_version < 91400:
        return 'cuDNN 9.11-9.13 has no SDPA dropout'
    return ''


# --------------------------------------------------------------------------
# backends
# --------------------------------------------------------------------------
def _first(reasons) -> str:
    for r in reasons:
        if r:
            return r
    return ''


def can_use_cudnn_attention(c: SdpaCall, d: Device = H100) -> str:
    """``sdp::can_use_cudnn_attention`` (dense inputs)."""
    if 'cudnn' not in d.enabled:
        return 'cuDNN attention disabled'
    return _first(f() for f in (
        lambda: check_tensor_shapes(c, d),
        lambda: check_tensor_dtype(c, (torch.float16, torch.bfloat16)),
        lambda: check_attn_mask_shape(c, d),
        lambda: check_sm_version(d, (8, 0), (12, 1), 'cuDNN'),
        lambda: check_cudnn_dropout(c, d),
        lambda: check_nonzero_sequence_lengths_dense(c, d),
        lambda: check_last_dim_stride_equals_1_dense(c, d, True),
        lambda: check_batch_size_and_num_heads_dense(c, d),
        lambda: check_cudnn_tensor_shapes(c, d)))


def can_use_flash_attention(c: SdpaCall, d: Device = H100) -> str:
    """``sdp::can_use_flash_attention`` (dense inputs; sm_90 has no
    sm86-89 head-dim > 192 training limit)."""
    if 'flash' not in d.enabled:
        return 'flash attention disabled'
    dtypes = (torch.float16, torch.bfloat16)
    if d.major >= 9 and d.fa3_enabled:
        dtypes = (torch.float8_e4m3fn, ) + dtypes
    causal_ok = '' if not c.is_causal or (
        c.query.shape[-2] == c.key.shape[-2]) else 'causal needs L == S'
    return _first(f() for f in (
        lambda: check_tensor_shapes(c, d),
        lambda: check_for_attn_mask(c, d),
        lambda: check_head_dim_size_flash(c, d),
        lambda: check_sm_version(d, (8, 0), (12, 1), 'flash'),
        lambda: causal_ok,
        lambda: check_tensor_dtype(c, dtypes),
        lambda: check_batch_size_and_num_heads_dense(c, d),
        lambda: check_nonzero_sequence_lengths_dense(c, d),
        lambda: check_last_dim_stride_equals_1_dense(c, d, True)))


def can_use_mem_efficient_attention(c: SdpaCall, d: Device = H100) -> str:
    """``sdp::can_use_mem_efficient_attention`` (dense inputs)."""
    if 'efficient' not in d.enabled:
        return 'memory-efficient attention disabled'
    dtypes = (torch.float16, torch.float32, torch.bfloat16) \
        if d.major >= 8 else (torch.float16, torch.float32)
    return _first(f() for f in (
        lambda: check_tensor_shapes(c, d),
        lambda: check_sm_version(d, (5, 0), (12, 1), 'memory-efficient'),
        lambda: check_head_dim_size_mem_efficient(c, d),
        lambda: check_data_ptr_alignment_mem_efficient(c, d),
        lambda: check_nonzero_sequence_lengths_dense(c, d),
        lambda: check_last_dim_stride_equals_1_dense(c, d, False),
        lambda: check_batch_size_and_num_heads_dense(c, d),
        lambda: check_tensor_dtype(c, dtypes)))


def priority_order(d: Device = H100) -> Tuple[str, ...]:
    """cuDNN first on sm_90/sm_10x with cuDNN > 9.15 (CUDA 13 builds; CUDA
    12 builds also need minor 0 or 3), else the default order."""
    prefer = d.cudnn_version > 91500 and d.major in (9, 10) and (
        d.cuda_version >= 13000 or d.minor in (0, 3))
    if prefer:
        return ('cudnn', 'flash', 'efficient', 'math')
    return ('flash', 'efficient', 'math', 'cudnn')


def check_backends(c: SdpaCall, d: Device = H100) -> Dict[str, str]:
    """Reason each backend rejects ``c`` ('' = it qualifies)."""
    return {
        'cudnn': can_use_cudnn_attention(c, d),
        'flash': can_use_flash_attention(c, d),
        'efficient': can_use_mem_efficient_attention(c, d),
        'math': '' if 'math' in d.enabled else 'math disabled',
    }


def select_backend(c: SdpaCall, d: Device = H100) -> str:
    """The backend ``sdp::select_sdp_backend`` picks for ``c``."""
    why = check_backends(c, d)
    for b in priority_order(d):
        if not why[b]:
            return b
    raise RuntimeError(f'No available SDPA kernel for {c}: {why}')


def aligned_tensor(t: TensorInfo, alignment: int = 8) -> bool:
    """``aligned_tensor<8>`` of attention.cpp: every stride but the last a
    multiple of ``alignment``, the last stride 1."""
    return all(s % alignment == 0 for s in t.stride[:-1]) and \
        t.stride[-1] == 1


def mask_copies(c: SdpaCall, backend: str) -> List[str]:
    """Copies of the mask ``scaled_dot_product_attention`` makes for
    ``backend`` after the choice (empty: the mask is used as given)."""
    m = c.attn_mask
    if m is None or backend == 'flash':
        return []
    out = []
    if m.dtype == torch.bool:
        out.append('bool mask converted to an additive mask (new tensor)')
    if backend == 'efficient' and not aligned_tensor(m):
        pad = 8 - m.shape[-1] % 8
        out.append(f'bias padded by {pad} in its last dim (pad_bias<8>: a '
                   'copy, saved for backward)')
    return out
