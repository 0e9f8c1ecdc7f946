"""Device-independent analysis of the GPU training step, measured on a CPU
without a GPU: what stalls it (:class:`StepAudit`, on the meta device) and
fake CUDA tensors with CUDA's autocast (:class:`FakeCUDAMode`).

Not imported by ``greenmim_mm`` itself: ``import greenmim_mm.analysis``.
"""
from .fake_cuda import FakeCUDAMode, fake_cuda_module, parameter_bytes
from .step_audit import KINDS, SYNCING, StepAudit

__all__ = [
    'StepAudit', 'SYNCING', 'KINDS', 'FakeCUDAMode', 'fake_cuda_module',
    'parameter_bytes'
]
