"""Training-step memory of a model on a GPU, counted on a CPU.

The forward runs on fake CUDA tensors (:class:`.FakeCUDAMode`: shapes,
dtypes and strides, no data; host work such as mask sampling and grouping
plans is real) under CUDA autocast forced on. Every tensor autograd saves
for backward is seen by ``torch.autograd.graph.saved_tensors_hooks`` and
counted once per storage (views and repeated saves share one storage), at
the storage's full size, with the op that wrote the storage (for an
in-place op, the last writer). Parameters, their gradients and AdamW's two
moments are added. The result is what a step holds between the end of the
forward and the start of the backward; kernel workspaces and the caching
allocator's slack are not counted.

The fake device does not choose attention kernels: every
``scaled_dot_product_attention`` call is run as the kernel an sm_90 GPU
would pick (:func:`.sdpa_rules.select_backend`), with the mask handling of
``aten/src/ATen/native/transformers/attention.cpp`` (boolean mask made
additive; the memory-efficient kernel's ``pad_bias`` copy of an unaligned
bias), so each kernel saves what it saves on a GPU (math: the attention
probabilities; fused kernels: q, k, v, mask, output and log-sum-exp).
"""
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._pytree import tree_flatten

from .fake_cuda import (FakeCUDAMode, fake_cuda_module, parameter_bytes,
                        storage_key)
from .sdpa_report import record_sdpa_calls
from .sdpa_rules import (H100, Device, SdpaCall, TensorInfo, aligned_tensor,
                         select_backend)

MiB = 2**20
#: label of the fp16/bf16 copies of parameters autocast makes (and caches)
WEIGHT_CAST = 'autocast weight cast'


@dataclass
class MemoryReport:
    """Bytes a training step holds.

    Attributes:
        params (int): Parameter bytes.
        grads (int): Gradient bytes (one per parameter that requires grad,
            same dtype).
        adamw_state (int): AdamW ``exp_avg`` and ``exp_avg_sq``.
        saved (int): Saved-for-backward bytes, deduplicated by storage,
            parameters excluded (autocast's weight casts included).
        saved_by_op (dict): ``saved`` split by the op that wrote each
            storage.
        saved_by_site (dict): ``saved`` split by op, dtype and shape of the
            storage's tensor (where the bytes are).
        num_saved_storages (int): Distinct storages saved.
        backends (dict): Attention calls per chosen kernel.
    """
    params: int
    grads: int
    adamw_state: int
    saved: int
    saved_by_op: Dict[str, int] = field(default_factory=dict)
    saved_by_site: Dict[str, int] = field(default_factory=dict)
    num_saved_storages: int = 0
    backends: Dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        """Everything: parameters, gradients, AdamW state, saved."""
        return self.params + self.grads + self.adamw_state + self.saved

    def top(self, n: int = 8, by: str = 'op') -> List[tuple]:
        """The ``n`` ops (``by='op'``) or sites (``by='site'``) whose
        outputs take most saved bytes."""
        d = self.saved_by_op if by == 'op' else self.saved_by_site
        return sorted(d.items(), key=lambda kv: -kv[1])[:n]

    def as_dict(self) -> dict:
        return dict(params_mib=self.params / MiB, grads_mib=self.grads / MiB,
                    adamw_mib=self.adamw_state / MiB,
                    saved_mib=self.saved / MiB, total_mib=self.total / MiB,
                    saved_storages=self.num_saved_storages,
                    attention_kernels=dict(self.backends),
                    saved_top_mib={k: v / MiB for k, v in self.top()},
                    saved_top_sites_mib={
                        k: v / MiB for k, v in self.top(by='site')})


def _op_name(func) -> str:
    name = str(func)  # e.g. aten.mm.default
    return name.rsplit('.', 1)[0] if name.count('.') >= 2 else name


class _Tracker:
    """Which op last wrote each fake storage (see the module docstring)."""

    def __init__(self):
        self.producer: Dict[int, str] = {}
        self.params: set = set()

    def __call__(self, func, args, kwargs, out):
        ins = {storage_key(t) for t in tree_flatten((args, kwargs))[0]
               if isinstance(t, torch.Tensor)}
        mutable = func._schema.is_mutable
        name = _op_name(func)
        if func is torch.ops.aten._to_copy.default and isinstance(
                args[0], torch.Tensor) and storage_key(args[0]) in self.params:
            name = WEIGHT_CAST
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                key = storage_key(t)
                if key not in ins or mutable:  # a new storage or a write
                    self.producer[key] = name


def _kernel_sdpa(device: Device, counts: Dict[str, int]) -> Callable:
    """An :class:`.SdpaRecorder` ``replace`` running each call as the
    kernel ``device`` picks."""
    aten = torch.ops.aten

    def run(call: SdpaCall, args, kwargs):
        backend = select_backend(call, device)
        counts[backend] += 1
        if backend == 'math':
            return None  # the fake device runs the math composite
        names = ('query', 'key', 'value', 'attn_mask', 'dropout_p',
                 'is_causal', 'scale')
        a = dict(zip(names, args), **kwargs)
        cache: Dict[int, torch.Tensor] = {}

        def cast(t):  # autocast's cached_cast: only fp32 leaves that need
            # grad (and are no views) are cached, others cast per argument
            if t.dtype == call.query.dtype:
                return t
            if not (t.is_leaf and t.requires_grad and not t._is_view()):
                return t.to(call.query.dtype)
            return cache.setdefault(id(t), t.to(call.query.dtype))

        q, k, v = (cast(a[n]) for n in names[:3])
        mask = a.get('attn_mask')
        drop, causal, scale = (a.get('dropout_p', 0.0),
                               a.get('is_causal', False), a.get('scale'))
        with torch.autocast('cuda', enabled=False):
            if mask is not None and mask.dtype == torch.bool:
                # convert_boolean_attn_mask: a new additive mask
                mask = torch.where(mask.logical_not(), float('-inf'),
                                   torch.zeros((), dtype=q.dtype,
                                               device=q.device))
            elif mask is not None:
                mask = mask.to(call.attn_mask.dtype)
            grad = call.input_requires_grad
            if backend == 'flash':  # pad_last_dim<8>: head dim to 8k
                e = q.shape[-1]
                if scale is None:
                    scale = e ** -0.5
                if e % 8:
                    q, k, v = (F.pad(t, (0, 8 - e % 8)) for t in (q, k, v))
                return aten._scaled_dot_product_flash_attention(
                    q, k, v, drop, causal, False, scale=scale)[0][..., :e]
            if backend == 'cudnn':
                return aten._scaled_dot_product_cudnn_attention(
                    q, k, v, mask, grad, drop, causal, False,
                    scale=scale)[0]
            if mask is not None:  # preprocess_mask
                info = TensorInfo.of(mask)
                if not aligned_tensor(info):  # pad_bias<8>: a copy
                    s = mask.shape[-1]
                    mask = F.pad(mask, (0, 8 - s % 8))[..., :s]
                mask = mask.expand(q.shape[0], q.shape[1], q.shape[2],
                                   k.shape[2])
            return aten._scaled_dot_product_efficient_attention(
                q, k, v, mask, grad, drop, causal, scale=scale)[0]

    return run


def memory_model(model: nn.Module,
                 loss_fn: Callable[[nn.Module, torch.Tensor], torch.Tensor],
                 input_shape: tuple,
                 dtype: Optional[torch.dtype] = torch.float16,
                 device: Device = H100) -> MemoryReport:
    """Memory of one training step of ``model`` on a GPU (see the module
    docstring). ``model``'s parameters become fake CUDA tensors in place.

    Args:
        model (nn.Module): The model, in training mode, on the CPU.
        loss_fn (Callable): ``loss_fn(model, inputs)`` returns the loss;
            called on fake CUDA inputs of ``input_shape``.
        input_shape (tuple): Shape of the fp32 input batch.
        dtype (torch.dtype, optional): Autocast dtype; None runs without
            autocast. Defaults to torch.float16.
        device (Device): The GPU the attention kernels are chosen for.
            Defaults to an sm_90 GPU (:data:`.sdpa_rules.H100`).

    Returns:
        MemoryReport: The counts.
    """
    tracker = _Tracker()
    mode = FakeCUDAMode(on_op=tracker)
    saved: Dict[int, torch.Tensor] = {}  # keeps each storage alive
    counts: Dict[str, int] = defaultdict(int)
    producers: Dict[int, str] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        key = storage_key(t)
        if key not in saved:
            saved[key] = t
            producers[key] = tracker.producer.get(key, 'input or host')
        return t

    with mode:
        fake_cuda_module(model, mode)
        params = list(model.parameters())
        tracker.params = {storage_key(p) for p in params}
        x = mode.empty(*input_shape)
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), \
                record_sdpa_calls(_kernel_sdpa(device, counts)):
            if dtype is None:
                loss_fn(model, x)
            else:
                with FakeCUDAMode.cuda_autocast(dtype):
                    loss_fn(model, x)
    by_op: Dict[str, int] = defaultdict(int)
    by_site: Dict[str, int] = defaultdict(int)
    total = 0
    for key, t in saved.items():
        if key in tracker.params:
            continue  # a parameter itself: counted as a parameter
        if t.device.type != 'cuda':
            raise RuntimeError(
                f'memory_model: autograd saved a {t.device} tensor of shape '
                f'{tuple(t.shape)} (from {producers[key]}) in a CUDA step; '
                'a host tensor in a device op syncs or fails on a GPU.')
        n = t.untyped_storage().nbytes()
        by_op[producers[key]] += n
        by_site[f'{producers[key]} {str(t.dtype)[6:]} '
                f'{list(t.shape)}'] += n
        total += n
    pb = parameter_bytes(params)
    return MemoryReport(pb['params'], pb['grads'], pb['adamw_state'], total,
                        dict(by_op), dict(by_site),
                        sum(1 for k in saved if k not in tracker.params),
                        dict(counts))


def reduction(green: MemoryReport, dense: MemoryReport) -> Dict[str, float]:
    """How much less ``green`` needs than ``dense`` (fractions)."""
    return dict(total=1 - green.total / dense.total,
                saved=1 - green.saved / dense.saved)


def format_memory(reports: Dict[str, MemoryReport], top: int = 6) -> str:
    """Text table of several reports (MiB) and each one's top savers."""
    cols = ('params', 'grads', 'adamw_state', 'saved', 'total')
    lines = [f"{'model':10s}" + ''.join(f'{c:>13s}' for c in cols) +
             '  attention kernels']
    for name, r in reports.items():
        vals = [getattr(r, c) / MiB for c in cols]
        lines.append(f'{name:10s}' + ''.join(f'{v:13.1f}' for v in vals) +
                     '  ' + ', '.join(f'{k} {v}'
                                      for k, v in sorted(r.backends.items())))
    for name, r in reports.items():
        lines.append(f'{name} saved activations by producing op (MiB): ' +
                     ', '.join(f'{k} {v / MiB:.1f}' for k, v in r.top(top)))
        lines.append(f'{name} largest saved sites (op dtype shape, summed '
                     'over blocks, MiB): ' +
                     '; '.join(f'{k} {v / MiB:.1f}'
                               for k, v in r.top(top, by='site')))
    return '\n'.join(lines)
