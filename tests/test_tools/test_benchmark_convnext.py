"""Smoke tests of tools/benchmark_convnext.py (tiny sizes)."""
import benchmark
import benchmark_convnext
import torch


def test_conv_benchmark_is_the_7x7_depthwise_conv():
    res = benchmark_convnext.main([
        '--only', 'conv', '--warmup', '1', '--threads', '1', '--no-memory',
        '--conv-args', '--conv-batch', '2', '--conv-channels', '8',
        '--conv-side', '16', '--conv-steps', '2'
    ])
    conv = res['conv']
    # ratio 0.6 of a 2x2 unit grid keeps 1 unit (64 stage-1 tokens)
    assert conv['dense']['tokens'] == 2 * 16 * 16
    assert conv['sparse']['tokens'] == 2 * 64
    assert conv['speedup'] > 0


def test_flops_count_the_gather_conv_multiply_adds():
    torch.manual_seed(0)
    b = benchmark_convnext.ConvNeXtBench('greenmim', 1, 64,
                                         torch.device('cpu'), False)
    plain = benchmark.Bench.forward_gflops(b)
    # one visible unit: 64, 16, 4, 1 tokens at the four stages
    taps = 2 * 49 * (3 * 96 * 64 + 3 * 192 * 16 + 9 * 384 * 4 + 3 * 768)
    assert abs((b.forward_gflops() - plain) * 1e9 - taps) < 1
