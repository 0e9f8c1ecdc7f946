#!/usr/bin/env python
"""GreenMIM vs SimMIM (mmpretrain), Swin-B, side by side in one process.

Per training step it measures forward, backward and optimiser time (median
of the timed steps, the two models interleaved step by step), throughput,
peak memory (``torch.cuda.max_memory_allocated`` on GPU; peak RSS of a fresh
subprocess on CPU), forward FLOPs (``torch.utils.flop_counter``), and for
GreenMIM the time spent planning the grouping and the padding waste of
every windowed stage.

    python tools/benchmark.py --batch-size 4 --steps 5 --threads 2
    python tools/benchmark.py --batch-size 128 --amp       # on a GPU
    python tools/benchmark.py --plan-only --batch-size 256  # planning only
    python tools/benchmark.py --bias-grad-ab --steps 10    # one CPU choice

Device-independent GPU report (no GPU needed; see greenmim_mm.analysis):

    python tools/benchmark.py --memory-model 256 --batch-size 128
    python tools/benchmark.py --sync-audit --batch-size 128
    python tools/benchmark.py --sdpa-report --batch-size 128
    python tools/benchmark.py --plan-split --batch-size 256

Prints a table and writes JSON (``--json``).
"""
import argparse
import json
import os
import os.path as osp
import resource
import statistics
import subprocess
import sys
import time

import torch

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
if REPO not in sys.path:  # run from a checkout without installing
    sys.path.insert(0, REPO)
GREEN_CFG = osp.join(REPO, 'configs', 'greenmim_swin.py')
W14_CFG = osp.join(REPO, 'configs',
                   'greenmim_swin-base-w14_8xb256-amp-coslr-800e_in1k.py')


def build(name, img_size=224, cfg_path=GREEN_CFG):
    """GreenMIM (the model of ``cfg_path``) or mmpretrain's SimMIM, Swin-B."""
    from mmengine.config import Config
    from mmpretrain.registry import MODELS
    import greenmim_mm  # noqa: F401
    if name == 'greenmim':
        cfg = Config.fromfile(cfg_path).model
        cfg.backbone.img_size = img_size
    else:
        cfg = dict(
            type='SimMIM',
            backbone=dict(type='SimMIMSwinTransformer', arch='base',
                          img_size=img_size,
                          stage_cfgs=dict(block_cfgs=dict(window_size=7))),
            neck=dict(type='SimMIMLinearDecoder', in_channels=1024,
                      encoder_stride=32),
            head=dict(type='SimMIMHead', patch_size=4,
                      loss=dict(type='PixelReconstructionLoss',
                                criterion='L1', channel=3)))
    model = MODELS.build(cfg)
    model.init_weights()
    return model


def simmim_samples(batch, img_size, device, ratio=0.6):
    """SimMIM masks at model-patch resolution from 32 px mask units."""
    from mmpretrain.structures import DataSample
    from greenmim_mm.models.utils import random_unit_mask
    g = img_size // 32
    m = random_unit_mask(batch, (g, g), ratio).view(batch, g, g)
    m = m.repeat_interleave(8, 1).repeat_interleave(8, 2).to(device)
    out = []
    for i in range(batch):
        s = DataSample()
        s.set_mask(m[i])
        out.append(s)
    return out


class Bench:
    """One model, its optimiser and a fixed input batch."""

    #: ``build(name, img_size)`` of the models (Swin-B here)
    build = staticmethod(build)

    def __init__(self, name, batch, img_size, device, amp,
                 prefetch_plans=False):
        self.name, self.device, self.amp = name, device, amp
        self.model = self.build(name, img_size).to(device).train()
        if name == 'greenmim':
            self.model.prefetch_plans = prefetch_plans
        self.iter = 0
        # the same optimiser for both; fused AdamW where torch has it
        try:
            self.opt = torch.optim.AdamW(
                self.model.parameters(), lr=1e-4, fused=True)
        except (RuntimeError, TypeError):
            self.opt = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.x = torch.randn(batch, 3, img_size, img_size, device=device)
        self.batch, self.img_size = batch, img_size
        self.times = {'forward': [], 'backward': [], 'optimizer': []}

    def _sync(self):
        if self.device.type == 'cuda':
            torch.cuda.synchronize()

    def loss(self):
        samples = None
        if self.name == 'simmim':
            samples = simmim_samples(self.batch, self.img_size, self.device)
        else:  # as under a Runner: per-iteration masks (and prefetching)
            from mmengine.logging import MessageHub
            MessageHub.get_current_instance().update_info('iter', self.iter)
            self.iter += 1
        with torch.autocast(self.device.type, dtype=torch.bfloat16,
                            enabled=self.amp):
            return self.model.loss(self.x, samples)['loss']

    def step(self, record=True):
        self._sync()
        t0 = time.perf_counter()
        loss = self.loss()
        self._sync()
        t1 = time.perf_counter()
        loss.backward()  # bf16 autocast needs no loss scaling
        self._sync()
        t2 = time.perf_counter()
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self._sync()
        t3 = time.perf_counter()
        if record:
            for k, t in zip(self.times, (t1 - t0, t2 - t1, t3 - t2)):
                self.times[k].append(t)

    def summary(self):
        med = {k: statistics.median(v) for k, v in self.times.items()}
        total = statistics.median(
            [sum(t) for t in zip(*self.times.values())])
        return dict(med, step=total, images_per_s=self.batch / total)

    def forward_gflops(self):
        from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

        def cpu_sdpa(q, k, v, *args, out_val=None, **kwargs):
            return sdpa_flop_count(q, k, v)

        # torch's counter has no formula for the CPU flash kernel
        extra = {}
        op = getattr(torch.ops.aten, '_scaled_dot_product_flash_attention_'
                     'for_cpu', None)
        if op is not None:
            extra[op] = cpu_sdpa
        with FlopCounterMode(display=False, custom_mapping=extra) as fc, \
                torch.no_grad():
            self.loss()
        return fc.get_total_flops() / 1e9 / self.batch


def green_planning(bench, steps=5, parts=None):
    """Median planning time per step and padding waste per stage.

    ``parts`` (a dict), when given, gets the median time of each part:
    ``make_plans`` (host), ``expand`` (token-level half on the device),
    ``bias_index`` and ``bias_reduction`` (the bias gather's index and its
    backward reduction, on the device).
    """
    from greenmim_mm.models.utils import (bias_index, bias_reduction,
                                          random_unit_mask, unit_grid)
    bb = bench.model.backbone
    grid = unit_grid((bench.img_size, bench.img_size), bb.mask_unit)
    times, waste = [], {}
    split = {'make_plans': [], 'expand': [], 'bias_index': [],
             'bias_reduction': []}
    for _ in range(steps):
        mask = random_unit_mask(bench.batch, grid, bench.model.mask_ratio)
        t0 = time.perf_counter()
        plans = bb.make_plans(mask, (bench.img_size, bench.img_size))
        t1 = time.perf_counter()
        moved = [p.to(bench.device) for sp in plans for p in sp.values()]
        t2 = time.perf_counter()
        for p in moved:  # the bias index is part of the plan too
            bias_index(p)
        t3 = time.perf_counter()
        for p in moved:  # and the reduction of its backward
            bias_reduction(p)
        bench._sync()
        t4 = time.perf_counter()
        times.append(t4 - t0)
        for k, t in zip(split, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            split[k].append(t)
        for i, sp in enumerate(plans):
            for (win, shift), p in sp.items():
                key = f'stage{i + 1}/{"shifted" if shift else "regular"}'
                if not p.identity:
                    waste.setdefault(key, []).append(p.padding_waste)
    if parts is not None:
        parts.update({k: statistics.median(v) for k, v in split.items()})
    return statistics.median(times), {
        k: statistics.mean(v) for k, v in waste.items()}


def bias_grad_ab(batch, img_size, device, steps, warmup):
    """GreenMIM steps with the prepared reduction as the backward of the
    bias gather against plain indexing (``index_put_`` with accumulation
    as backward), interleaved."""
    import greenmim_mm.models.utils.group_attention as ga
    from greenmim_mm.models.utils import bias_index
    reduced = ga.gather_bias

    def plain(table, plan, dtype=None):
        idx, blocked = bias_index(plan)  # (G, g, g_pad)
        g = plan.group_size
        bias = table[idx[..., :g]].permute(0, 3, 1, 2)  # (G, heads, g, g)
        return bias.masked_fill(blocked[:, None, :, :g],
                                float('-inf')).to(dtype or table.dtype)

    bench = Bench('greenmim', batch, img_size, device, False)
    times = {'reduction': [], 'plain': []}
    try:
        for i in range(warmup + steps):
            for name, fn in (('reduction', reduced), ('plain', plain)):
                ga.gather_bias = fn
                t0 = time.perf_counter()
                bench.step(record=False)
                if i >= warmup:
                    times[name].append(time.perf_counter() - t0)
    finally:
        ga.gather_bias = reduced
    res = {k: statistics.median(v) for k, v in times.items()}
    print(f"bias-gather backward, batch {batch}: prepared reduction "
          f"{res['reduction']:.3f} s/step, plain indexing {res['plain']:.3f}"
          f" s/step (median of {steps})")
    return res


def _loss_fn(name, img_size):
    """``loss_fn(model, x)`` of a model built by :func:`build`."""
    if name == 'greenmim':
        return lambda m, x: m.loss(x, None)['loss']
    return lambda m, x: m.loss(
        x, simmim_samples(x.shape[0], img_size, x.device))['loss']


DTYPES = {'fp16': torch.float16, 'bf16': torch.bfloat16, 'fp32': None}


def memory_report(batches, img_size, dtype='fp16'):
    """Modelled GPU memory of a training step, GreenMIM vs SimMIM."""
    from greenmim_mm.analysis.memory_model import (format_memory,
                                                   memory_model, reduction)
    res = {}
    for b in batches:
        reps = {n: memory_model(build(n, img_size).train(),
                                _loss_fn(n, img_size),
                                (b, 3, img_size, img_size), DTYPES[dtype])
                for n in ('greenmim', 'simmim')}
        red = reduction(reps['greenmim'], reps['simmim'])
        print(f'\nModelled GPU memory of a training step (fake CUDA, {dtype}'
              f' autocast, sm_90 attention kernels; measured on a CPU), '
              f'Swin-B {img_size}px, batch {b}, MiB:')
        print(format_memory(reps))
        print(f"GreenMIM needs {100 * red['total']:.1f}% less in all, "
              f"{100 * red['saved']:.1f}% less saved activations")
        res[b] = dict({n: r.as_dict() for n, r in reps.items()},
                      reduction_total=red['total'],
                      reduction_saved=red['saved'])
    return res


def sync_audit(batch, img_size, steps=2):
    """Syncs and host-to-device copies per GreenMIM step on ``meta``."""
    from greenmim_mm.analysis import KINDS, audit_training_step
    res = audit_training_step(build('greenmim', img_size), batch, img_size,
                              'meta', steps)
    for i, r in enumerate(res):
        print(f'GreenMIM Swin-B step {i + 1} on the meta device (batch '
              f"{batch}, {r['device_ops']} device ops): " + ', '.join(
                  f'{k} {r[k]}' for k in KINDS))
        for msg in r['problems']:
            print('   ', msg)
    return res


def sdpa_report(batch, img_size, dtype='fp16'):
    """Attention kernel of every SDPA call of a GreenMIM step on sm_90."""
    from greenmim_mm.analysis import (FakeCUDAMode, fake_cuda_module,
                                      record_sdpa_calls, sdpa_table)
    from greenmim_mm.analysis.sdpa_report import format_sdpa_table
    model = build('greenmim', img_size).train()
    mode = FakeCUDAMode()
    with mode:
        fake_cuda_module(model, mode)
        x = mode.empty(batch, 3, img_size, img_size)
        with record_sdpa_calls() as calls:
            if DTYPES[dtype] is None:
                _loss_fn('greenmim', img_size)(model, x)
            else:
                with FakeCUDAMode.cuda_autocast(DTYPES[dtype]):
                    _loss_fn('greenmim', img_size)(model, x)
    rows = sdpa_table(calls)
    print(f'GreenMIM Swin-B {img_size}px, batch {batch}, {dtype}: '
          f'{len(calls)} scaled_dot_product_attention calls per forward; '
          'kernels on an sm_90 GPU (torch 2.13 rules, cuDNN 9.20; checked '
          'on a CPU). mmpretrain SimMIM Swin calls no SDPA (explicit '
          'matmul + softmax).')
    print(format_sdpa_table(rows))
    return rows


def plan_split(batch, steps=5):
    """Host planning time per part, Swin-B 224/w7 and 448/w14."""
    from greenmim_mm.analysis.planning_split import (format_split,
                                                     planning_split)
    res = {}
    for name, cfg, size in (('Swin-B 224/w7', GREEN_CFG, 224),
                            ('Swin-B 448/w14', W14_CFG, 448)):
        bb = build('greenmim', size, cfg).backbone
        res[name] = planning_split(bb, batch, (size, size), steps)
        print(format_split(name, batch, res[name]) +
              f' (median of {steps}, {torch.get_num_threads()} threads, '
              'host CPU)')
    return res


def peak_rss_mb(name, batch, img_size, threads):
    """Peak RSS of a fresh subprocess running 3 steps of one model."""
    out = subprocess.run(
        [sys.executable, __file__, '--memory-probe', name, '--batch-size',
         str(batch), '--img-size', str(img_size), '--threads', str(threads)],
        capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def setup_run(threads=None, device=None) -> torch.device:
    """Threads, quiet mmengine logs, a fixed seed; returns the device."""
    if threads:
        torch.set_num_threads(threads)
    from mmengine.logging import MMLogger
    MMLogger.get_instance('mmengine', log_level='WARNING')  # quiet init
    torch.manual_seed(0)
    return torch.device(device or (
        'cuda' if torch.cuda.is_available() else 'cpu'))


def write_json(path, res):
    """Write the results to ``path`` (nothing when it is None)."""
    if path:
        os.makedirs(osp.dirname(osp.abspath(path)), exist_ok=True)
        with open(path, 'w') as f:
            json.dump(res, f, indent=2)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--img-size', type=int, default=224)
    p.add_argument('--steps', type=int, default=5)
    p.add_argument('--warmup', type=int, default=2)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--device', default=None)
    p.add_argument('--amp', action='store_true', help='bf16 autocast')
    p.add_argument('--no-memory', action='store_true')
    p.add_argument('--json', default=None)
    p.add_argument('--plan-only', action='store_true',
                   help='only time the grouping plan (no training steps)')
    p.add_argument('--prefetch-plans', action='store_true',
                   help="GreenMIM's prefetch_plans=True (next step's masks "
                   'and plans in a background thread)')
    p.add_argument('--bias-grad-ab', action='store_true',
                   help='only compare GreenMIM steps with the prepared '
                   'reduction and the plain backward of the bias gather')
    p.add_argument('--memory-model', type=int, nargs='*', default=None,
                   metavar='EXTRA_BATCH', help='only the modelled GPU memory '
                   'of a step (fake CUDA; at --batch-size and any EXTRA_BATCH'
                   ' given), GreenMIM vs SimMIM')
    p.add_argument('--dtype', choices=sorted(DTYPES), default='fp16',
                   help='autocast dtype of --memory-model/--sdpa-report')
    p.add_argument('--sync-audit', action='store_true', help='only count '
                   'syncs and blocking/late host-to-device copies per '
                   'GreenMIM step on the meta device')
    p.add_argument('--sdpa-report', action='store_true', help='only the '
                   'attention kernel of each SDPA call on an sm_90 GPU')
    p.add_argument('--plan-split', action='store_true', help='only the '
                   'host planning time per part (224/w7 and 448/w14)')
    p.add_argument('--memory-probe', default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    device = setup_run(args.threads, args.device)

    if args.memory_model is not None:
        batches = [args.batch_size] + [
            b for b in args.memory_model if b != args.batch_size]
        res = memory_report(batches, args.img_size, args.dtype)
        write_json(args.json, res)
        return res
    if args.sync_audit or args.sdpa_report:
        res = sync_audit(args.batch_size, args.img_size) if args.sync_audit \
            else sdpa_report(args.batch_size, args.img_size, args.dtype)
        write_json(args.json, res)
        return res
    if args.plan_split:
        res = plan_split(args.batch_size, args.steps)
        write_json(args.json, res)
        return res

    if args.memory_probe:
        b = Bench(args.memory_probe, args.batch_size, args.img_size, device,
                  args.amp)
        for _ in range(3):
            b.step(record=False)
        # VmHWM belongs to this exec'd image; ru_maxrss may carry over the
        # parent's peak through fork on Linux
        with open('/proc/self/status') as f:
            hwm = [ln for ln in f if ln.startswith('VmHWM:')]
        print(int(hwm[0].split()[1]) / 1024 if hwm else
              resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        return

    if args.bias_grad_ab:
        return bias_grad_ab(args.batch_size, args.img_size, device,
                            args.steps, args.warmup)

    if args.plan_only:
        bench = Bench.__new__(Bench)
        bench.model, bench.device = build('greenmim', args.img_size), device
        bench.batch, bench.img_size = args.batch_size, args.img_size
        parts = {}
        plan_s, waste = green_planning(bench, args.steps, parts)
        print(f'grouping plan, batch {args.batch_size}: {plan_s * 1e3:.1f} '
              f'ms (median of {args.steps}; ' + ', '.join(
                  f'{k} {v * 1e3:.1f} ms' for k, v in parts.items()) +
              '); padding waste: ' + ', '.join(
                  f'{k} {100 * v:.1f}%' for k, v in waste.items()))
        return dict(plan_ms=plan_s * 1e3, padding_waste=waste,
                    parts_ms={k: v * 1e3 for k, v in parts.items()})

    benches = [Bench(n, args.batch_size, args.img_size, device, args.amp,
                     args.prefetch_plans) for n in ('greenmim', 'simmim')]
    for _ in range(args.warmup):
        for b in benches:
            b.step(record=False)
    for _ in range(args.steps):
        for b in benches:  # interleaved: both see the same machine state
            b.step()
    res = {b.name: b.summary() for b in benches}
    for b in benches:
        res[b.name]['gflops_fwd_per_img'] = b.forward_gflops()
        if device.type == 'cuda':
            torch.cuda.reset_peak_memory_stats()
            b.step(record=False)
            res[b.name]['peak_mem_mb'] = \
                torch.cuda.max_memory_allocated() / 2**20
        elif not args.no_memory:
            res[b.name]['peak_mem_mb'] = peak_rss_mb(
                b.name, args.batch_size, args.img_size,
                args.threads or torch.get_num_threads())
    plan_s, waste = green_planning(benches[0])
    g, s = res['greenmim'], res['simmim']
    res['speedup'] = s['step'] / g['step']
    res['flop_ratio'] = s['gflops_fwd_per_img'] / g['gflops_fwd_per_img']
    res['speedup_of_flop_limit'] = res['speedup'] / res['flop_ratio']
    res['plan_ms'] = plan_s * 1e3
    res['plan_fraction_of_step'] = plan_s / g['step']
    res['padding_waste'] = waste
    res['setup'] = dict(device=str(device), batch=args.batch_size,
                        img_size=args.img_size, amp=args.amp,
                        prefetch_plans=args.prefetch_plans,
                        threads=torch.get_num_threads(), steps=args.steps,
                        torch=torch.__version__)

    print(f"\nSwin-B {args.img_size}px, batch {args.batch_size}, "
          f"{device}, threads {torch.get_num_threads()}, "
          f"amp {args.amp}, median of {args.steps} steps")
    cols = ['forward', 'backward', 'optimizer', 'step']
    print(f"{'model':10s}" + ''.join(f'{c + " s":>12s}' for c in cols) +
          f"{'img/s':>9s}{'GFLOP/img':>11s}{'peak MB':>10s}")
    for n in ('greenmim', 'simmim'):
        r = res[n]
        print(f'{n:10s}' + ''.join(f'{r[c]:12.3f}' for c in cols) +
              f"{r['images_per_s']:9.2f}{r['gflops_fwd_per_img']:11.2f}"
              f"{r.get('peak_mem_mb', float('nan')):10.0f}")
    print(f"speed-up {res['speedup']:.2f}x; FLOP ratio (limit) "
          f"{res['flop_ratio']:.2f}x; {100 * res['speedup_of_flop_limit']:.0f}"
          f'% of the limit')
    print(f"grouping plan {res['plan_ms']:.1f} ms/step "
          f"({100 * res['plan_fraction_of_step']:.2f}% of the step)")
    print('padding waste: ' + ', '.join(
        f'{k} {100 * v:.1f}%' for k, v in waste.items()))
    write_json(args.json, res)
    return res


if __name__ == '__main__':
    main()
