#!/usr/bin/env python
"""GreenMIM on Twins-SVT-L against a dense SimMIM-style Twins, and the
sparse depthwise PEG conv against the dense conv.

(a) ``conv``: the PEG's 3x3 depthwise conv at the stage-1 size of SVT-L
    (224 px -> 56x56 map, 128 channels), mask ratio 0.75: the sparse conv
    (gather backend, visible tokens only) against ``nn.Conv2d`` on the full
    map. Median forward + backward time, and peak memory (CUDA: max
    allocated; CPU: peak RSS above the bare process of a fresh subprocess,
    with glibc returning freed buffers to the OS), inputs included.
(b) ``step``: one training step of GreenMIM SVT-L (``configs/
    greenmim_twins.py``) against a dense SimMIM-style SVT-L (mask token
    replacing masked patches after the patch embedding, full map, linear
    pixel decoder and L1 loss as mmpretrain's SimMIM), through
    ``tools/benchmark.py``'s ``Bench`` (same timing, FLOP counting and
    interleaving).

    python tools/benchmark_twins.py --threads 2 --batch-sizes 2 4
    python tools/benchmark_twins.py --only conv --conv-batch 16
    python tools/benchmark_twins.py --device cuda --amp --batch-sizes 64

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

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
GREEN_CFG = osp.join(REPO, 'configs', 'greenmim_twins.py')


# --------------------------------------------------------------------------
# (b) models
# --------------------------------------------------------------------------
def _register_dense_twins():
    """A dense SimMIM-style SVT: ``forward(x, mask)`` with a mask token."""
    from mmpretrain.models import SVT
    from mmpretrain.registry import MODELS
    from torch import nn

    @MODELS.register_module(name='BenchSimMIMSVT', force=True)
    class SimMIMSVT(SVT):
        """SVT whose masked patches (mask at stage-1 resolution, 1 =
        masked) are replaced by a learned token after the patch embedding.
        """

        def __init__(self, **kwargs):
            super().__init__(**kwargs)
            self.mask_token = nn.Parameter(
                torch.zeros(1, 1, self.embed_dims[0]))

        def forward(self, x, mask=None):
            outs, b = [], x.shape[0]
            for i in range(self.num_stage):
                x, hw = self.patch_embeds[i](x)  # (B, H*W, C)
                if i == 0 and mask is not None:
                    w = mask.flatten(1)[..., None].type_as(x)  # (B, HW, 1)
                    x = x * (1. - w) + self.mask_token.to(x.dtype) * w
                x = self.position_encoding_drops[i](x)
                for j, blk in enumerate(self.stages[i]):
                    x = blk(x, hw)
                    if j == 0:
                        x = self.position_encodings[i](x, hw)
                x = getattr(self, f'norm_after_stage{i}')(x)
                x = x.reshape(b, *hw, -1).permute(0, 3, 1, 2).contiguous()
                if i in self.out_indices:
                    outs.append(x)
            return tuple(outs)


def build_twins(name, img_size=224):
    """GreenMIM SVT-L (the entry-point config) or SimMIM-style SVT-L."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    import greenmim_mm  # noqa: F401
    if name == 'greenmim':
        cfg = Config.fromfile(GREEN_CFG).model
    else:
        _register_dense_twins()
        cfg = dict(
            type='SimMIM',
            backbone=dict(type='BenchSimMIMSVT', arch='large',
                          out_indices=(3, ),
                          norm_after_stage=[False, False, False, True]),
            neck=dict(type='SimMIMLinearDecoder', in_channels=1024,
                      encoder_stride=32),
            head=dict(type='SimMIMHead', patch_size=4,
                      loss=dict(type='PixelReconstructionLoss',
                                criterion='L1', channel=3)))
    model = MODELS.build(cfg)
    model.init_weights()
    return model


class TwinsBench(benchmark.Bench):
    """``benchmark.Bench`` (one model, optimiser, fixed batch) for Twins;
    SimMIM masks come from ``benchmark.simmim_samples`` (32 px units)."""
    build = staticmethod(build_twins)


def twins_planning(bench, steps=5):
    """Median time of GreenSVT's plans (sparse conv + grouping) per step."""
    from greenmim_mm.models.utils import random_unit_mask, unit_grid
    bb = bench.model.backbone
    size = (bench.img_size, bench.img_size)
    grid = unit_grid(size, bb.mask_unit)
    times = []
    for _ in range(steps):
        mask = random_unit_mask(bench.batch, grid, bench.model.mask_ratio)
        t0 = time.perf_counter()
        plans = bb.make_plans(mask, size)
        for sp in plans:
            if sp['lsa'] is not None and not sp['lsa'].identity:
                sp['lsa'].to(bench.device).same_window
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


# --------------------------------------------------------------------------
# (a) sparse depthwise conv
# --------------------------------------------------------------------------
def _conv_case(kind, batch, channels, side, ratio, device, seed=0,
               kernel=3):
    """Inputs of one conv run: (conv, x, plan or None)."""
    from torch import nn
    from greenmim_mm.models.utils import (plan_sparse_conv, random_unit_mask,
                                          token_coords, visible_unit_ids)
    g = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(channels, channels, kernel, padding=kernel // 2,
                     groups=channels)
    conv = conv.to(device)
    if kind == 'dense':
        x = torch.randn(batch, channels, side, side, generator=g)
        return conv, x.to(device).requires_grad_(), None
    unit_side = 8  # stage-1 tokens per 32 px unit
    grid = (side // unit_side, side // unit_side)
    mask = random_unit_mask(batch, grid, ratio, generator=g)
    coords = token_coords(visible_unit_ids(mask), grid[1], 3)
    plan = plan_sparse_conv(coords, (side, side), kernel).to(device)
    x = torch.randn(*coords.shape[:2], channels, generator=g)
    return conv, x.to(device).requires_grad_(), plan


def _conv_run(kind, conv, x, plan):
    from greenmim_mm.models.utils import sparse_conv2d
    if kind == 'dense':
        out = conv(x)
    else:
        out = sparse_conv2d(conv, x, plan, backend='gather')
    out.backward(torch.ones_like(out))
    return out


def _sync(device):
    if device.type == 'cuda':
        torch.cuda.synchronize()


def conv_time(kind, args, device):
    """Median forward + backward seconds, and planning seconds."""
    from greenmim_mm.models.utils import (plan_sparse_conv, random_unit_mask,
                                          token_coords, visible_unit_ids)
    conv, x, plan = _conv_case(kind, args.conv_batch, args.conv_channels,
                               args.conv_side, args.ratio, device,
                               kernel=args.conv_kernel)
    times = []
    for i in range(args.warmup + args.conv_steps):
        x.grad = None
        _sync(device)
        t0 = time.perf_counter()
        _conv_run(kind, conv, x, plan)
        _sync(device)
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    res = dict(fwd_bwd_ms=statistics.median(times) * 1e3)
    if kind == 'sparse':
        side = args.conv_side
        mask = random_unit_mask(args.conv_batch, (side // 8, side // 8),
                                args.ratio)
        coords = token_coords(visible_unit_ids(mask), side // 8, 3)
        plan_t = []
        for _ in range(args.conv_steps):
            t0 = time.perf_counter()
            plan_sparse_conv(coords, (side, side), args.conv_kernel)
            plan_t.append(time.perf_counter() - t0)
        res['plan_ms'] = statistics.median(plan_t) * 1e3
        res['tokens'] = plan.num_tokens
    else:
        res['tokens'] = args.conv_batch * args.conv_side**2
    return res


def _status_kb(field):
    with open('/proc/self/status') as f:
        for line in f:
            if line.startswith(field + ':'):
                return int(line.split()[1])
    raise RuntimeError(f'{field} not in /proc/self/status')


def conv_memory_probe(kind, args, device):
    """Peak memory (MB) of one forward + backward, inputs and plan
    included, above the process before they were made. Meaningful in a
    fresh process started by :func:`_probe` (glibc then serves large
    buffers by mmap and returns them on free, so RSS follows live
    tensors); a long-lived process reuses its free heap instead."""
    import gc
    case = dict(kind=kind, batch=args.conv_batch,
                channels=args.conv_channels, side=args.conv_side,
                ratio=args.ratio, device=device, kernel=args.conv_kernel)
    _conv_run(kind, *_conv_case(**case))
    gc.collect()
    if device.type == 'cuda':
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        _conv_run(kind, *_conv_case(**case))
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    with open('/proc/self/clear_refs', 'w') as f:
        f.write('5')  # reset VmHWM to the current RSS
    base = _status_kb('VmRSS')
    _conv_run(kind, *_conv_case(**case))
    return (_status_kb('VmHWM') - base) / 1024


def _probe(flags, args):
    """Run this script in a fresh process; return its last printed float."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_='65536',
               MALLOC_TRIM_THRESHOLD_='0')
    cmd = [sys.executable, __file__, *flags, '--threads',
           str(args.threads or torch.get_num_threads())]
    if args.device:
        cmd += ['--device', args.device]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True,
                         env=env)
    return float(out.stdout.strip().splitlines()[-1])


def step_memory_probe(name, batch, args, device):
    """Peak RSS (MB) of 3 training steps, VmHWM of this fresh process."""
    b = TwinsBench(name, batch, args.img_size, device, args.amp)
    for _ in range(3):
        b.step(record=False)
    if device.type == 'cuda':
        return torch.cuda.max_memory_allocated() / 2**20
    return _status_kb('VmHWM') / 1024


# --------------------------------------------------------------------------
def run_conv(args, device):
    res = {}
    for kind in ('dense', 'sparse'):
        res[kind] = conv_time(kind, args, device)
        if not args.no_memory:
            res[kind]['peak_mem_mb'] = _probe(
                ['--conv-probe', kind, '--conv-batch', str(args.conv_batch),
                 '--conv-channels', str(args.conv_channels), '--conv-side',
                 str(args.conv_side), '--ratio', str(args.ratio),
                 '--conv-kernel', str(args.conv_kernel)], args)
    d, s = res['dense'], res['sparse']
    res['speedup'] = d['fwd_bwd_ms'] / s['fwd_bwd_ms']
    if s.get('peak_mem_mb', 0) > 0:
        res['memory_ratio'] = d['peak_mem_mb'] / s['peak_mem_mb']
    k = args.conv_kernel
    print(f'\n(a) depthwise {k}x{k} conv, batch {args.conv_batch}, '
          f'{args.conv_channels} ch, {args.conv_side}x{args.conv_side} map, '
          f'mask ratio {args.ratio}, {device}, threads '
          f'{torch.get_num_threads()}, median of {args.conv_steps}')
    print(f"{'conv':22s}{'tokens':>9s}{'fwd+bwd ms':>12s}{'peak MB':>10s}")
    for kind, label in (('dense', 'dense nn.Conv2d'),
                        ('sparse', 'sparse (gather)')):
        r = res[kind]
        print(f"{label:22s}{r['tokens']:9d}{r['fwd_bwd_ms']:12.2f}"
              f"{r.get('peak_mem_mb', float('nan')):10.1f}")
    print(f"speed-up {res['speedup']:.2f}x"
          + (f", memory {res['memory_ratio']:.2f}x less"
             if 'memory_ratio' in res else '')
          + f"; neighbour-table plan {s['plan_ms']:.2f} ms")
    return res


def run_steps(args, device):
    res = {}
    cols = ['forward', 'backward', 'optimizer', 'step']
    for batch in args.batch_sizes:
        benches = [TwinsBench(n, batch, args.img_size, device, args.amp)
                   for n in ('greenmim', 'simmim')]
        for _ in range(args.warmup):
            for b in benches:
                b.step(record=False)
        for _ in range(args.steps):
            for b in benches:  # interleaved: both see the same machine
                b.step()
        r = {b.name: b.summary() for b in benches}
        for b in benches:
            r[b.name]['gflops_fwd_per_img'] = b.forward_gflops()
            if not args.no_memory:
                r[b.name]['peak_mem_mb'] = _probe(
                    ['--step-probe', b.name, '--batch-sizes', str(batch),
                     '--img-size', str(args.img_size)] +
                    (['--amp'] if args.amp else []), args)
        r['speedup'] = r['simmim']['step'] / r['greenmim']['step']
        r['flop_ratio'] = (r['simmim']['gflops_fwd_per_img'] /
                           r['greenmim']['gflops_fwd_per_img'])
        r['plan_ms'] = twins_planning(benches[0]) * 1e3
        res[batch] = r
        del benches
    print(f'\n(b) Twins-SVT-L training step, {args.img_size}px, {device}, '
          f'threads {torch.get_num_threads()}, amp {args.amp}, median of '
          f'{args.steps} steps')
    print(f"{'model':10s}{'batch':>6s}" + ''.join(f'{c + " s":>12s}'
                                                 for c in cols) +
          f"{'img/s':>8s}{'GFLOP/img':>11s}{'peak MB':>9s}")
    for batch, r in res.items():
        for n in ('greenmim', 'simmim'):
            m = r[n]
            print(f'{n:10s}{batch:6d}' + ''.join(f'{m[c]:12.3f}'
                                                 for c in cols) +
                  f"{m['images_per_s']:8.2f}{m['gflops_fwd_per_img']:11.2f}"
                  f"{m.get('peak_mem_mb', float('nan')):9.0f}")
        print(f"  batch {batch}: speed-up {r['speedup']:.2f}x, FLOP ratio "
              f"{r['flop_ratio']:.2f}x, plans {r['plan_ms']:.1f} ms/step")
    return res


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--only', choices=('conv', 'step'), default=None)
    p.add_argument('--batch-sizes', type=int, nargs='+', default=[2, 4])
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--conv-batch', type=int, default=16)
    p.add_argument('--conv-channels', type=int, default=128)
    p.add_argument('--conv-side', type=int, default=56)
    p.add_argument('--conv-steps', type=int, default=20)
    p.add_argument('--conv-kernel', type=int, default=3)
    p.add_argument('--ratio', type=float, default=0.75)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--device', default=None)
    p.add_argument('--amp', action='store_true', help='bf16 autocast')
    p.add_argument('--no-memory', action='store_true')
    p.add_argument('--json', default=None)
    p.add_argument('--conv-probe', default=None, help=argparse.SUPPRESS)
    p.add_argument('--step-probe', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = benchmark.setup_run(args.threads, args.device)
    if args.conv_probe:
        print(conv_memory_probe(args.conv_probe, args, device))
        return
    if args.step_probe:
        print(step_memory_probe(args.step_probe, args.batch_sizes[0], args,
                                device))
        return
    res = dict(setup=dict(device=str(device), threads=torch.get_num_threads(),
                          amp=args.amp, torch=torch.__version__))
    if args.only in (None, 'conv'):
        res['conv'] = run_conv(args, device)
    if args.only in (None, 'step'):
        res['step'] = run_steps(args, device)
    benchmark.write_json(args.json, res)
    return res


if __name__ == '__main__':
    main()
