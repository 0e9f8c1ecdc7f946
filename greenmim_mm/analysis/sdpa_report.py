"""Which attention kernel each ``scaled_dot_product_attention`` call of a
step gets on an sm_90 GPU (H100/H200), decided without a GPU.

:func:`record_sdpa_calls` runs a function (a training step's forward on fake
CUDA tensors, see :mod:`.fake_cuda`) and records every
``F.scaled_dot_product_attention`` call as an :class:`.SdpaCall`: shapes,
dtypes, strides, storage offsets and ``requires_grad`` of q/k/v and the
mask, dropout, scale. Under CUDA autocast the recorded tensors are the ones
the kernel chooser sees: autocast runs the op with the ``lower_precision_fp``
policy (``KERNEL_CUDA(scaled_dot_product_attention, lower_precision_fp)`` in
``aten/src/ATen/autocast_mode.cpp``), which casts every floating tensor
argument to the autocast dtype with ``.to`` (strides kept) and leaves a
boolean mask alone. :func:`sdpa_table` then applies the chooser's rules
(:mod:`.sdpa_rules`) to each distinct call.
"""
import contextlib
from typing import Callable, Dict, Iterator, List, Optional

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from .sdpa_rules import (BACKENDS, H100, Device, SdpaCall, TensorInfo,
                         check_backends, mask_copies, select_backend)

__all__ = ['SdpaRecorder', 'record_sdpa_calls', 'sdpa_call', 'sdpa_table',
           'format_sdpa_table', 'describe', 'autocast_dtype', 'Device',
           'H100', 'SdpaCall', 'TensorInfo', 'check_backends',
           'select_backend', 'mask_copies']


# --------------------------------------------------------------------------
# recording
# --------------------------------------------------------------------------
class SdpaRecorder(TorchFunctionMode):
    """Records every ``F.scaled_dot_product_attention`` call (then runs it).

    Args:
        replace (Callable, optional): ``replace(call, args, kwargs)``
            returning a result runs the call another way (e.g. as the kernel
            a GPU would pick); returning None runs it as usual.
            Defaults to None.
    """

    def __init__(self, replace: Optional[Callable] = None):
        super().__init__()
        self.replace = replace
        self.calls: List[SdpaCall] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is not F.scaled_dot_product_attention:
            return func(*args, **kwargs)
        call = sdpa_call(*args, **kwargs)
        self.calls.append(call)
        if self.replace is not None:
            out = self.replace(call, args, kwargs)
            if out is not None:
                return out
        return func(*args, **kwargs)


def autocast_dtype(device_type: str = 'cuda') -> Optional[torch.dtype]:
    """The dtype autocast casts ``scaled_dot_product_attention``'s floating
    arguments to, or None when autocast is off."""
    if not torch.is_autocast_enabled(device_type):
        return None
    return torch.get_autocast_dtype(device_type)


def sdpa_call(query, key, value, attn_mask=None, dropout_p=0.0,
              is_causal=False, scale=None, enable_gqa=False) -> SdpaCall:
    """An :class:`SdpaCall` of the arguments, after CUDA autocast."""
    dev = query.device.type
    cast = autocast_dtype(dev)

    def info(t):
        eligible = cast is not None and t.is_floating_point() and \
            t.dtype != torch.float64
        return TensorInfo.of(t, cast if eligible else None)

    mask = None if attn_mask is None else info(attn_mask)
    return SdpaCall(info(query), info(key), info(value), mask,
                    float(dropout_p), bool(is_causal),
                    None if scale is None else float(scale),
                    bool(enable_gqa), torch.is_grad_enabled())


@contextlib.contextmanager
def record_sdpa_calls(replace: Optional[Callable] = None
                      ) -> Iterator[List[SdpaCall]]:
    """Context manager yielding the list of recorded calls."""
    rec = SdpaRecorder(replace)
    with rec:
        yield rec.calls


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------
def describe(c: SdpaCall) -> str:
    """A short key for grouping identical calls."""
    m = c.attn_mask
    mask = 'none' if m is None else (
        f'{str(m.dtype)[6:]} {list(m.shape)} stride {list(m.stride)}'
        f'{" grad" if m.requires_grad else ""}')
    return (f'q {list(c.query.shape)} {str(c.query.dtype)[6:]} stride '
            f'{list(c.query.stride)}, head dim {c.query.shape[-1]}, mask '
            f'{mask}, dropout {c.dropout_p:g}')


def sdpa_table(calls: List[SdpaCall], d: Device = H100) -> List[dict]:
    """One row per distinct kind of call: count, which backends qualify
    (with the first reason of each that does not), the chosen one, and the
    mask copies that follow."""
    rows: Dict[str, dict] = {}
    for c in calls:
        key = describe(c)
        if key in rows:
            rows[key]['calls'] += 1
            continue
        why = check_backends(c, d)
        chosen = select_backend(c, d)
        rows[key] = dict(call=key, calls=1, chosen=chosen,
                         qualifies=[b for b in BACKENDS if not why[b]],
                         rejected={b: r for b, r in why.items() if r},
                         mask_copies=mask_copies(c, chosen))
    return list(rows.values())


def format_sdpa_table(rows: List[dict]) -> str:
    """Text lines of :func:`sdpa_table`."""
    lines = []
    for r in rows:
        lines.append(f"{r['calls']:4d} x {r['call']}")
        lines.append(f"       qualifies: {', '.join(r['qualifies'])}; "
                     f"chosen: {r['chosen']}")
        for b, why in r['rejected'].items():
            lines.append(f'       {b}: {why}')
        for m in r['mask_copies']:
            lines.append(f'       mask: {m}')
    return '\n'.join(lines)
