"""Fake CUDA tensors on a machine without a GPU, with CUDA's autocast.

:class:`FakeCUDAMode` is a ``FakeTensorMode`` in which only device work is
fake: an op on real CPU tensors (mask sampling, grouping plans) runs for
real, an op that touches a fake tensor or creates one on ``cuda`` is run by
the fake mode (shapes, dtypes and strides, no data). Parameters and inputs
become fake CUDA tensors with :func:`fake_cuda_module` and
:meth:`FakeCUDAMode.empty`. Inside :meth:`FakeCUDAMode.cuda_autocast`,
``torch.autocast('cuda', ...)`` behaves as on a GPU (fp16 matmuls, fp32
norms and softmax): torch otherwise turns it off when no CUDA device exists.
Only forwards run this way (the autograd engine needs a real CUDA context
for a CUDA backward); use the ``meta`` device for a whole step.
"""
import contextlib
from typing import Callable, Dict, Iterator, Optional, Sequence

import torch
import torch.cuda.amp.common as amp_common
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
from torch.multiprocessing.reductions import StorageWeakRef
from torch.utils._python_dispatch import _disable_current_modes
from torch.utils._pytree import tree_flatten

CUDA = torch.device('cuda', 0)


def storage_key(t: torch.Tensor) -> int:
    """An id of ``t``'s storage, shared by all its views."""
    return StorageWeakRef(t.untyped_storage()).cdata


def _targets_cuda(kwargs: dict) -> bool:
    dev = kwargs.get('device')
    return dev is not None and torch.device(dev).type == 'cuda'


class FakeCUDAMode(FakeTensorMode):
    """Fake CUDA device work, real host work (see the module docstring).

    Every op run on fake tensors is passed to ``on_op(func, args, kwargs,
    out)`` when given (e.g. to record which op made which storage).

    Args:
        on_op (Callable, optional): Called after every fake op.
            Defaults to None.
    """

    def __init__(self, on_op: Optional[Callable] = None):
        super().__init__(allow_non_fake_inputs=True)
        self.on_op = on_op

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        flat = tree_flatten((args, kwargs))[0]
        if not _targets_cuda(kwargs) and not any(
                isinstance(t, FakeTensor) for t in flat):
            with _disable_current_modes():  # host work: real tensors
                return func(*args, **kwargs)
        out = super().__torch_dispatch__(func, types, args, kwargs)
        if self.on_op is not None:
            self.on_op(func, args, kwargs, out)
        return out

    def empty(self, *shape: int, dtype: torch.dtype = torch.float32,
              requires_grad: bool = False) -> torch.Tensor:
        """A fake contiguous CUDA tensor."""
        t = FakeTensor(self, torch.empty(*shape, dtype=dtype, device='meta'),
                       CUDA)
        return t.requires_grad_(requires_grad)

    def fake(self, t: torch.Tensor) -> torch.Tensor:
        """A fake CUDA tensor with ``t``'s shape, dtype and strides."""
        meta = torch.empty_strided(t.shape, t.stride(), dtype=t.dtype,
                                   device='meta')
        return FakeTensor(self, meta, CUDA)

    @staticmethod
    @contextlib.contextmanager
    def cuda_autocast(dtype: torch.dtype = torch.float16) -> Iterator[None]:
        """``torch.autocast('cuda', dtype)`` forced on without a GPU (an
        sm_80+ GPU is assumed: bfloat16 is allowed)."""
        saved = amp_common.amp_definitely_not_available
        saved_bf16 = torch.cuda.is_bf16_supported
        amp_common.amp_definitely_not_available = lambda: False
        torch.cuda.is_bf16_supported = lambda *a, **k: True
        try:
            with torch.autocast('cuda', dtype=dtype):
                yield
        finally:
            amp_common.amp_definitely_not_available = saved
            torch.cuda.is_bf16_supported = saved_bf16


def fake_cuda_module(module: nn.Module, mode: FakeCUDAMode) -> nn.Module:
    """Replace every parameter and buffer of ``module`` (in place) by a
    fake CUDA tensor of the same shape, dtype and ``requires_grad``."""
    for m in module.modules():
        for name, p in list(m._parameters.items()):
            if p is not None:
                m._parameters[name] = nn.Parameter(
                    mode.fake(p.detach()), requires_grad=p.requires_grad)
        for name, b in list(m._buffers.items()):
            if b is not None:
                m._buffers[name] = mode.fake(b)
    return module


def parameter_bytes(params: Sequence[torch.Tensor]) -> Dict[str, int]:
    """Bytes of parameters, their gradients and AdamW's two moments
    (same dtype as each parameter; AdamW keeps ``exp_avg`` and
    ``exp_avg_sq``, plus a scalar step)."""
    p = sum(t.numel() * t.element_size() for t in params)
    g = sum(t.numel() * t.element_size() for t in params if t.requires_grad)
    return dict(params=p, grads=g, adamw_state=2 * g)
