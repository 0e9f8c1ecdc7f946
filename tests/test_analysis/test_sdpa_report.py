"""record_sdpa_calls sees the calls as the kernel chooser does (after CUDA
autocast, on fake CUDA tensors), and sdpa_table groups and decides them."""
import torch
import torch.nn.functional as F

from greenmim_mm.analysis import (H100, FakeCUDAMode, record_sdpa_calls,
                                  sdpa_table, select_backend)

half = torch.float16


def test_recorder_sees_autocast_casts_on_fake_cuda():
    mode = FakeCUDAMode()
    with mode:
        q = mode.empty(2, 4, 10, 32, requires_grad=True)
        bias = mode.empty(2, 10, 10, 4).permute(0, 3, 1, 2)
        keep = mode.empty(2, 1, 10, 10, dtype=torch.bool)
        with FakeCUDAMode.cuda_autocast(), record_sdpa_calls() as calls:
            F.scaled_dot_product_attention(q, q, q, attn_mask=bias)
            F.scaled_dot_product_attention(q, q, q, attn_mask=keep)
        F.scaled_dot_product_attention(q, q, q)  # not recorded
    assert len(calls) == 2
    c, b = calls
    assert c.query.dtype == half and c.query.requires_grad
    assert c.attn_mask.dtype == half  # cast, strides kept
    assert c.attn_mask.stride == (400, 1, 40, 4)
    assert select_backend(c, H100) == 'math'
    assert b.attn_mask.dtype == torch.bool and select_backend(b) == 'cudnn'
    rows = sdpa_table(calls + [c])
    assert [r['calls'] for r in rows] == [2, 1]
    assert rows[0]['chosen'] == 'math' and rows[0]['qualifies'] == ['math']
    assert 'stride 4 != 1' in rows[0]['rejected']['efficient']
    assert rows[1]['chosen'] == 'cudnn' and rows[1]['mask_copies']
