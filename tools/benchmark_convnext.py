#!/usr/bin/env python
"""GreenMIM ConvNeXt-V2-T against mmpretrain's SparK (SparseConvNeXt V2-T)
and a dense ConvNeXt-V2-T step, and the sparse 7x7 depthwise conv against
the dense one.

(a) ``conv``: the 7x7 depthwise conv at ConvNeXt-T stage-1 size (224 px ->
    56x56 map, 96 channels, batch 8), mask ratio 0.6: the sparse conv
    (gather backend, visible tokens only) against ``nn.Conv2d`` on the full
    map, forward + backward, through ``tools/benchmark_twins.py``'s conv
    benchmark (same timing and fresh-process peak memory).
(b) ``step``: one training step, batch 8, 224 px, mask ratio 0.6, of

    * ``greenmim``: ``configs/greenmim_convnext-v2-tiny_8xb256-amp-coslr-
      800e_in1k.py`` (visible units only, 1-block decoder at 1/32);
    * ``spark``: mmpretrain's shipped ``spark_sparse-convnextv2-tiny_16xb256-
      amp-coslr-800e_in1k.py`` model (SparseConvNeXt simulates sparsity
      with dense ops and masks; its light U-Net decoder);
    * ``dense``: a SimMIM-style dense ConvNeXt-V2-T (mask token after the
      stem, the full map through every stage, linear pixel decoder).

    Timed with ``tools/benchmark.py``'s ``Bench`` (median forward, backward
    and AdamW times, the models interleaved step by step). Forward FLOPs by
    ``torch.utils.flop_counter``; the gather conv's multiply-adds
    (``addcmul``, which the counter has no formula for) are counted as 2
    FLOPs per output element, as the counter counts the dense conv's.
    Peak memory: peak RSS of a fresh process running 3 steps (CPU) or
    ``max_memory_allocated`` (CUDA).

    python tools/benchmark_convnext.py --threads 2
    python tools/benchmark_convnext.py --only conv --conv-args --conv-steps 40
    python tools/benchmark_convnext.py --device cuda --amp --batch-size 64

Prints tables and writes JSON (``--json``).
"""
import argparse
import os
import os.path as osp
import statistics
import subprocess
import sys
import time

import torch

sys.path.insert(0, osp.dirname(osp.abspath(__file__)))
import benchmark  # noqa: E402  (tools/benchmark.py)
import benchmark_twins  # noqa: E402  (tools/benchmark_twins.py)

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
GREEN_CFG = osp.join(
    REPO, 'configs', 'greenmim_convnext-v2-tiny_8xb256-amp-coslr-800e_in1k.py')
SPARK_CFG = 'spark/spark_sparse-convnextv2-tiny_16xb256-amp-coslr-800e_in1k.py'
MODELS_ = ('greenmim', 'spark', 'dense')


def _register_dense_convnext():
    """A dense SimMIM-style ConvNeXt: ``forward(x, mask)``, mask token."""
    from mmpretrain.models import ConvNeXt
    from mmpretrain.registry import MODELS
    from torch import nn

    @MODELS.register_module(name='BenchSimMIMConvNeXt', force=True)
    class SimMIMConvNeXt(ConvNeXt):
        """ConvNeXt whose masked stem tokens (mask at stem resolution, 1 =
        masked) are replaced by a learned token."""

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mask_token = nn.Parameter(
                torch.zeros(1, self.channels[0], 1, 1))

        def forward(self, x, mask=None):
            outs = []
            for i, stage in enumerate(self.stages):
                x = self.downsample_layers[i](x)  # (B, C, H, W)
                if i == 0 and mask is not None:
                    w = mask[:, None].type_as(x)  # (B, 1, H, W)
                    x = x * (1. - w) + self.mask_token.to(x.dtype) * w
                x = stage(x)
                if i in self.out_indices:
                    outs.append(getattr(self, f'norm{i}')(x))
            return tuple(outs)


def build_convnext(name, img_size=224):
    """One of :data:`MODELS_`, initialised, at ratio 0.6."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    import greenmim_mm  # noqa: F401
    if name == 'greenmim':
        cfg = Config.fromfile(GREEN_CFG).model
    elif name == 'spark':
        import mmpretrain
        cfg = Config.fromfile(osp.join(
            osp.dirname(mmpretrain.__file__), '.mim', 'configs',
            SPARK_CFG)).model
        cfg.input_size = img_size
    else:
        _register_dense_convnext()
        cfg = dict(
            type='SimMIM',
            backbone=dict(type='BenchSimMIMConvNeXt', arch='tiny',
                          use_grn=True, layer_scale_init_value=0.,
                          out_indices=(3, ), gap_before_final_norm=False),
            neck=dict(type='SimMIMLinearDecoder', in_channels=768,
                      encoder_stride=32),
            head=dict(type='SimMIMHead', patch_size=4,
                      loss=dict(type='PixelReconstructionLoss',
                                criterion='L1', channel=3)))
    model = MODELS.build(cfg)
    model.init_weights()
    if name != 'dense' and float(model.mask_ratio) != 0.6:
        raise ValueError(f'{name} mask ratio {model.mask_ratio} != 0.6')
    return model


class ConvNeXtBench(benchmark.Bench):
    """``benchmark.Bench`` for the ConvNeXt models; the dense model gets
    SimMIM masks (``benchmark.simmim_samples``, ratio 0.6, 32 px units)."""
    build = staticmethod(build_convnext)

    def loss(self):
        if self.name != 'dense':
            return super().loss()
        samples = benchmark.simmim_samples(self.batch, self.img_size,
                                           self.device, ratio=0.6)
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.amp):
            return self.model.loss(self.x, samples)['loss']

    def forward_gflops(self):
        """``Bench.forward_gflops`` plus the gather conv's multiply-adds."""
        from torch.utils._python_dispatch import TorchDispatchMode
        # the gather conv accumulates its taps with in-place addcmul_ (the
        # sparse GRN's out-of-place addcmul is elementwise, like the
        # norms, which no model's count includes)
        ops = {torch.ops.aten.addcmul_.default}

        class CountAddcmul(TorchDispatchMode):
            flops = 0

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                if func in ops:
                    CountAddcmul.flops += 2 * out.numel()
                return out

        with CountAddcmul():
            gflops = super().forward_gflops()
        return gflops + CountAddcmul.flops / 1e9 / self.batch


def green_planning(bench, steps=5):
    """Median seconds of GreenConvNeXt's plans per step (host unit ids and
    the four neighbour tables built on the device)."""
    from greenmim_mm.models.utils import random_unit_mask, unit_grid
    bb = bench.model.backbone
    size = (bench.img_size, bench.img_size)
    grid = unit_grid(size, bb.mask_unit)
    times = []
    for _ in range(steps):
        mask = random_unit_mask(bench.batch, grid, 0.6)
        benchmark_twins._sync(bench.device)
        t0 = time.perf_counter()
        for p in bb.make_plans(mask, size):
            p.to(bench.device)
        benchmark_twins._sync(bench.device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def step_memory_probe(name, args, device):
    """Peak memory (MB) of 3 training steps in this (fresh) process."""
    b = ConvNeXtBench(name, args.batch_size, args.img_size, device, args.amp)
    for _ in range(3):
        b.step(record=False)
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated() / 2**20
    return benchmark_twins._status_kb('VmHWM') / 1024


def _step_probe(name, args):
    cmd = [sys.executable, __file__, '--step-probe', name, '--batch-size',
           str(args.batch_size), '--img-size', str(args.img_size),
           '--threads', str(args.threads or torch.get_num_threads())]
    cmd += (['--device', args.device] if args.device else []) + \
        (['--amp'] if args.amp else [])
    # as benchmark_twins' probes: glibc returns freed buffers to the OS
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536',
               MALLOC_TRIM_THRESHOLD_='0')
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=env)
    return float(out.stdout.strip().splitlines()[-1])


def run_steps(args, device):
    benches = [ConvNeXtBench(n, args.batch_size, args.img_size, device,
                             args.amp) for n in MODELS_]
    for _ in range(args.warmup):
        for b in benches:
            b.step(record=False)
    for _ in range(args.steps):
        for b in benches:  # interleaved: all see the same machine
            b.step()
    res = {b.name: b.summary() for b in benches}
    for b in benches:
        res[b.name]['gflops_fwd_per_img'] = b.forward_gflops()
    res['plan_ms'] = green_planning(benches[0]) * 1e3
    del benches
    if not args.no_memory:
        for n in MODELS_:
            res[n]['peak_mem_mb'] = _step_probe(n, args)
    g = res['greenmim']
    for n in ('spark', 'dense'):
        res[f'speedup_vs_{n}'] = res[n]['step'] / g['step']
        res[f'flop_ratio_vs_{n}'] = (res[n]['gflops_fwd_per_img'] /
                                     g['gflops_fwd_per_img'])
        res[f'speedup_share_of_flop_ratio_vs_{n}'] = (
            res[f'speedup_vs_{n}'] / res[f'flop_ratio_vs_{n}'])
    cols = ['forward', 'backward', 'optimizer', 'step']
    print(f'\n(b) ConvNeXt-V2-T training step, batch {args.batch_size}, '
          f'{args.img_size}px, mask ratio 0.6, {device}, threads '
          f'{torch.get_num_threads()}, amp {args.amp}, median of '
          f'{args.steps} steps')
    print(f"{'model':10s}" + ''.join(f'{c + " s":>12s}' for c in cols) +
          f"{'img/s':>8s}{'GFLOP/img':>11s}{'peak MB':>9s}")
    for n in MODELS_:
        m = res[n]
        print(f'{n:10s}' + ''.join(f'{m[c]:12.3f}' for c in cols) +
              f"{m['images_per_s']:8.2f}{m['gflops_fwd_per_img']:11.2f}"
              f"{m.get('peak_mem_mb', float('nan')):9.0f}")
    for n in ('spark', 'dense'):
        print(f"vs {n}: speed-up {res[f'speedup_vs_{n}']:.2f}x, FLOP ratio "
              f"{res[f'flop_ratio_vs_{n}']:.2f}x (speed-up = "
              f"{100 * res[f'speedup_share_of_flop_ratio_vs_{n}']:.0f}% of "
              'it)')
    print(f"GreenMIM plans {res['plan_ms']:.1f} ms/step")
    return res


def run_conv(args):
    """(a): ``benchmark_twins``' conv benchmark at ConvNeXt-T stage-1 size
    (batch 8, 96 channels, 56x56, 7x7 kernel, ratio 0.6)."""
    flags = ['--only', 'conv', '--conv-kernel', '7', '--conv-batch', '8',
             '--conv-channels', '96', '--conv-side', '56', '--ratio', '0.6',
             '--warmup', str(args.warmup)]
    flags += ['--threads', str(args.threads)] if args.threads else []
    flags += ['--device', args.device] if args.device else []
    flags += ['--no-memory'] if args.no_memory else []
    return benchmark_twins.main(flags + args.conv_args)['conv']


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--only', choices=('conv', 'step'), default=None)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--conv-args', nargs=argparse.REMAINDER, default=[],
                   help='last: more benchmark_twins flags for (a), e.g. '
                   '--conv-steps 5 --conv-side 16')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--device', default=None)
    p.add_argument('--amp', action='store_true', help='bf16 autocast')
    p.add_argument('--no-memory', action='store_true')
    p.add_argument('--json', default=None)
    p.add_argument('--step-probe', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = benchmark.setup_run(args.threads, args.device)
    if args.step_probe:
        print(step_memory_probe(args.step_probe, args, device))
        return
    res = dict(setup=dict(device=str(device), threads=torch.get_num_threads(),
                          amp=args.amp, torch=torch.__version__))
    if args.only in (None, 'conv'):
        res['conv'] = run_conv(args)
    if args.only in (None, 'step'):
        res['step'] = run_steps(args, device)
    benchmark.write_json(args.json, res)
    return res


if __name__ == '__main__':
    main()
