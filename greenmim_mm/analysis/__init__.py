"""Device-independent analysis of the GPU training step: what stalls it
(:class:`StepAudit`), how much memory it needs (:mod:`.memory_model`),
which attention kernels it gets (:mod:`.sdpa_report`, :mod:`.sdpa_rules`)
and what planning costs on the host (:mod:`.planning_split`), all measured
on a CPU, without a GPU.

Not imported by ``greenmim_mm`` itself: ``import greenmim_mm.analysis``.
"""
from .fake_cuda import FakeCUDAMode, fake_cuda_module, parameter_bytes
from .memory_model import MemoryReport, memory_model
from .planning_split import PARTS, planning_split
from .sdpa_report import record_sdpa_calls, sdpa_table
from .sdpa_rules import (H100, Device, SdpaCall, TensorInfo, check_backends,
                         mask_copies, select_backend)
from .step_audit import KINDS, SYNCING, StepAudit, audit_training_step

__all__ = [
    'StepAudit', 'SYNCING', 'KINDS', 'audit_training_step', 'FakeCUDAMode',
    'fake_cuda_module', 'parameter_bytes', 'MemoryReport', 'memory_model',
    'PARTS', 'planning_split', 'Device', 'H100', 'SdpaCall', 'TensorInfo',
    'check_backends', 'select_backend', 'mask_copies', 'record_sdpa_calls',
    'sdpa_table'
]
