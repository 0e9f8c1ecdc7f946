"""Host-to-device copies that never make the host wait."""
from typing import Union

import torch
from torch import Tensor


def to_device(t: Tensor, device: Union[str, torch.device]) -> Tensor:
    """Copy a (CPU) index tensor to ``device`` without a host-device sync.

    A CUDA copy from pageable memory makes the host wait for the copy, and
    a blocking one for all queued work; a copy from pinned memory with
    ``non_blocking=True`` is queued like a kernel. torch's pinned-memory
    allocator keeps the staging buffer alive until the copy is done.

    Args:
        t (Tensor): The tensor.
        device (str | torch.device): Target device.

    Returns:
        Tensor: ``t`` itself when it is already on ``device``.
    """
    device = torch.device(device)
    if t.device == device:
        return t
    if (device.type == 'cuda' and t.device.type == 'cpu'
            and torch.cuda.is_available()):
        t = t.pin_memory()
    return t.to(device, non_blocking=True)
