"""Smoke test of tools/benchmark_twins.py's sparse-conv part (tiny sizes)."""
import argparse
import json

import benchmark_twins


def test_conv_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / 'res.json'
    res = benchmark_twins.main([
        '--only', 'conv', '--conv-batch', '2', '--conv-channels', '8',
        '--conv-side', '16', '--conv-steps', '2', '--warmup', '1',
        '--threads', '1', '--no-memory', '--json', str(out)
    ])
    conv = res['conv']
    # 2 samples x 16x16 map; ratio 0.75 of a 2x2 unit grid keeps 1 unit
    assert conv['dense']['tokens'] == 2 * 16 * 16
    assert conv['sparse']['tokens'] == 2 * 1 * 64
    assert conv['speedup'] > 0 and conv['sparse']['plan_ms'] > 0
    assert json.loads(out.read_text())['conv']['sparse']['tokens'] == 128


def test_conv_memory_probe_measures_the_dense_map():
    """The probe runs in a fresh process (as the benchmark does)."""
    args = argparse.Namespace(threads=1, device='cpu')
    mb = benchmark_twins._probe(
        ['--conv-probe', 'dense', '--conv-batch', '4', '--conv-channels',
         '64', '--conv-side', '64'], args)
    # input, output and their gradients are 4 MB each
    assert 8.0 <= mb < 64.0, mb
