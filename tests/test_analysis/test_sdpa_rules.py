"""The sm_90 kernel choice of hand-made SDPA calls, against the rules of
torch 2.13's sdp_utils (see greenmim_mm/analysis/sdpa_rules.py)."""
import pytest
import torch

from greenmim_mm.analysis import (Device, SdpaCall, TensorInfo,
                                  check_backends, mask_copies, select_backend)

half = torch.float16


def t(shape, dtype=half, grad=True, stride=None, offset=0):
    if stride is None:  # contiguous
        stride, n = [], 1
        for s in reversed(shape):
            stride.insert(0, n)
            n *= s
    return TensorInfo(tuple(shape), tuple(stride), dtype, offset, grad)


def call(b=8, h=4, n=49, e=32, dtype=half, mask=None, dropout=0.0, **kw):
    q = kw.pop('q', t((b, h, n, e), dtype))
    return SdpaCall(q, t((b, h, n, e), dtype), t((b, h, n, e), dtype), mask,
                    dropout, **kw)


def test_unmasked_fp16_call_qualifies_everywhere_and_gets_cudnn():
    c = call()
    assert check_backends(c) == dict(cudnn='', flash='', efficient='',
                                     math='')
    assert select_backend(c) == 'cudnn'  # cuDNN 9.20 > 9.15 on sm_90
    # older cuDNN, or a CUDA 12 build on sm_90 (minor 0): the same rule,
    # otherwise flash first
    assert select_backend(c, Device(cudnn_version=91000)) == 'flash'
    assert select_backend(c, Device(cuda_version=12080)) == 'cudnn'
    assert select_backend(c, Device(major=8, minor=0)) == 'flash'


def test_bias_that_requires_grad_gets_the_memory_efficient_kernel():
    c = call(mask=t((8, 4, 49, 49), grad=True))
    why = check_backends(c)
    assert 'requires grad' in why['cudnn']
    assert 'no attn_mask' in why['flash']
    assert why['efficient'] == '' and select_backend(c) == 'efficient'
    # strides 49 are not multiples of 8: pad_bias<8> copies the bias
    assert any('padded by 7' in m for m in mask_copies(c, 'efficient'))
    # the same bias without grad runs on cuDNN, used as given
    c2 = call(mask=t((8, 4, 49, 49), grad=False))
    assert select_backend(c2) == 'cudnn' and mask_copies(c2, 'cudnn') == []


def test_aligned_bias_is_not_copied():
    # last dim 48: every stride a multiple of 8
    assert mask_copies(call(n=48, mask=t((8, 4, 48, 48))), 'efficient') == []
    # a (.., 49) view of a (.., 56) buffer: aligned, no copy
    view = t((8, 4, 49, 49), stride=(4 * 49 * 56, 49 * 56, 56, 1))
    assert mask_copies(call(mask=view), 'efficient') == []
    # last dim a multiple of 8 but the row stride is not: copied (pad 8)
    odd = t((8, 4, 48, 48), stride=(4 * 48 * 50, 48 * 50, 50, 1))
    assert any('padded by 8' in m for m in mask_copies(call(n=48, mask=odd),
                                                      'efficient'))


def test_bias_with_last_stride_not_1_falls_back_to_math():
    # (G, g, g, heads).permute(0, 3, 1, 2): stride(-1) == heads
    perm = t((8, 4, 49, 49), stride=(49 * 49 * 4, 1, 49 * 4, 4))
    c = call(mask=perm)
    why = check_backends(c)
    assert 'stride 4 != 1' in why['efficient']
    assert select_backend(c) == 'math'


def test_bool_mask_without_grad_runs_on_cudnn_and_is_made_additive():
    c = call(mask=t((8, 1, 49, 49), dtype=torch.bool, grad=False))
    assert select_backend(c) == 'cudnn'
    assert any('additive' in m for m in mask_copies(c, 'cudnn'))
    # a mask that does not broadcast over the heads (3 of 4) is refused
    bad = call(mask=t((8, 3, 49, 49), dtype=torch.bool, grad=False))
    assert 'attn_mask' in check_backends(bad)['cudnn']


@pytest.mark.parametrize('e,ok', [
    (32, dict(cudnn=True, flash=True, efficient=True)),
    (128, dict(cudnn=True, flash=True, efficient=True)),
    (136, dict(cudnn=False, flash=True, efficient=True)),  # cuDNN <= 128
    (256, dict(cudnn=False, flash=True, efficient=True)),
    (264, dict(cudnn=False, flash=False, efficient=True)),  # flash <= 256
    (30, dict(cudnn=False, flash=True, efficient=False)),  # 30 % 8
])
def test_head_dim_limits_fp16(e, ok):
    why = check_backends(call(e=e))
    assert {b: not why[b] for b in ok} == ok, why


def test_head_dim_limit_cudnn_256_with_newer_cudnn():
    why = check_backends(call(e=256), Device(cudnn_version=92300))
    assert why['cudnn'] == ''


def test_dtypes():
    f32 = check_backends(call(dtype=torch.float32))
    assert 'dtype' in f32['cudnn'] and 'dtype' in f32['flash']
    assert f32['efficient'] == ''  # fp32 is allowed, alignment 4
    assert select_backend(call(dtype=torch.float32)) == 'efficient'
    assert check_backends(call(e=30, dtype=torch.float32))['efficient']
    assert check_backends(call(e=36, dtype=torch.float32))['efficient'] == ''
    assert select_backend(call(dtype=torch.float64)) == 'math'
    assert select_backend(call(dtype=torch.bfloat16)) == 'cudnn'


def test_storage_offset_dropout_and_hardware():
    # 4 halves = 8 bytes: not 16-byte aligned for the memory-efficient kernel
    q = t((8, 4, 49, 32), offset=4)
    assert 'aligned' in check_backends(call(q=q))['efficient']
    assert check_backends(call(q=t((8, 4, 49, 32), offset=8)))[
        'efficient'] == ''
    assert '1/16' in check_backends(call(dropout=0.1))['cudnn']
    assert check_backends(call(dropout=0.125))['cudnn'] == ''
    turing = check_backends(call(), Device(major=7, minor=5))
    assert 'sm80' in turing['flash'] and 'sm80' in turing['cudnn']
    assert turing['efficient'] == ''
    assert select_backend(call(), Device(enabled=('math', ))) == 'math'
    with pytest.raises(RuntimeError, match='No available SDPA kernel'):
        select_backend(call(dtype=torch.float64), Device(enabled=('flash',)))
