#!/usr/bin/env python
"""Cost of keeping a non-finite sample inside its sample (CPU or GPU).

Times a GreenMIM Swin-B masked forward + backward with the isolation of
``greenmim_mm.models.utils.nonfinite`` and with it switched off, the two
interleaved step by step, and prints the median of each.

    python tools/benchmark_nonfinite.py --batch-size 4 --steps 6 --threads 2
"""
import argparse
import statistics
import time

import torch


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--batch-size', type=int, default=4)
    p.add_argument('--steps', type=int, default=6)
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--device', default='cpu')
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    import greenmim_mm.models.backbones.green_swin as mod
    from greenmim_mm.models import GreenSwinTransformer
    from greenmim_mm.models.utils import random_unit_mask
    model = GreenSwinTransformer(arch='base', window_size=7).to(args.device)
    img = torch.randn(args.batch_size, 3, 224, 224, device=args.device)
    mask = random_unit_mask(args.batch_size, (7, 7), 0.75)
    plans = model.make_plans(mask, (224, 224))
    on = mod.isolate_nonfinite
    off = lambda x: (x, torch.zeros(x.shape[0], dtype=torch.bool,  # noqa
                                    device=x.device))
    times = {'isolated': [], 'not isolated': []}
    for step in range(args.steps + 1):
        for name, fn in (('isolated', on), ('not isolated', off)):
            mod.isolate_nonfinite = fn
            if args.device != 'cpu':
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            model(img, mask=mask, plans=plans)[-1].sum().backward()
            if args.device != 'cpu':
                torch.cuda.synchronize()
            if step:  # the first round warms up
                times[name].append(time.perf_counter() - t0)
    mod.isolate_nonfinite = on
    med = {k: statistics.median(v) for k, v in times.items()}
    for k, v in med.items():
        print(f'{k:>13}: {v * 1e3:8.1f} ms per forward+backward')
    print(f'cost: {100 * (med["isolated"] / med["not isolated"] - 1):+.2f}%')


if __name__ == '__main__':
    main()
