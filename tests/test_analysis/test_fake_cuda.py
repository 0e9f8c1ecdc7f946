"""FakeCUDAMode: host work real, device work fake, CUDA autocast forced on
and restored; fake_cuda_module and parameter_bytes."""
import torch
import torch.cuda.amp.common as amp_common
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

from greenmim_mm.analysis import (FakeCUDAMode, fake_cuda_module,
                                  parameter_bytes)
from greenmim_mm.analysis.fake_cuda import storage_key


def test_host_ops_are_real_and_device_ops_fake():
    mode = FakeCUDAMode()
    with mode:
        a = torch.arange(5) * 2  # host work: real values
        b = mode.empty(3, 4)
        c = (b @ b.t()).relu()
        d = a.to('cuda', non_blocking=True)
    assert type(a) is torch.Tensor and a.tolist() == [0, 2, 4, 6, 8]
    assert isinstance(c, FakeTensor) and c.device.type == 'cuda'
    assert c.shape == (3, 3) and isinstance(d, FakeTensor)


def test_cuda_autocast_is_forced_on_and_restored():
    saved = amp_common.amp_definitely_not_available
    mode = FakeCUDAMode()
    m = nn.Sequential(nn.Linear(8, 8), nn.LayerNorm(8))
    with mode:
        fake_cuda_module(m, mode)
        x = mode.empty(2, 8)
        with FakeCUDAMode.cuda_autocast(torch.float16):
            h = m[0](x)
            y = m[1](h)
        plain = m[0](x)
    assert h.dtype == torch.float16  # linear runs in fp16
    assert y.dtype == torch.float32  # layer_norm is an fp32 op
    assert plain.dtype == torch.float32
    assert amp_common.amp_definitely_not_available is saved
    bf16 = torch.cuda.is_bf16_supported
    with mode, FakeCUDAMode.cuda_autocast(torch.bfloat16):
        assert m[0](x).dtype == torch.bfloat16
    assert torch.cuda.is_bf16_supported is bf16


def test_fake_cuda_module_and_parameter_bytes():
    m = nn.Linear(8, 4)
    m.bias.requires_grad_(False)
    m.register_buffer('idx', torch.arange(3))
    mode = FakeCUDAMode()
    with mode:
        fake_cuda_module(m, mode)
    assert all(isinstance(p, FakeTensor) and p.device.type == 'cuda'
               for p in m.parameters())
    assert m.weight.requires_grad and not m.bias.requires_grad
    assert m.idx.dtype == torch.long and m.idx.shape == (3, )
    assert parameter_bytes(list(m.parameters())) == dict(
        params=(32 + 4) * 4, grads=32 * 4, adamw_state=2 * 32 * 4)


def test_storage_key_is_shared_by_views_only():
    x = torch.zeros(4, 4)
    assert storage_key(x[1:]) == storage_key(x.t())
    assert storage_key(x) != storage_key(x.clone())
