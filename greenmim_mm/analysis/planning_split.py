"""Host CPU time of GreenSwinTransformer's planning, split into its parts.

:meth:`GreenSwinTransformer.make_plans` is the host half of every grouping
plan (see :mod:`greenmim_mm.models.utils.window_plan`). For each windowed
stage and shift it runs, in order:

* ``unit_ids``: the visible unit ids and the float unit mask (once);
* ``window_counts``: every window's token count, ``visible @ table`` with
  the stage's static unit-window table (cached after the first call);
* ``histogram``: the histogram of those counts, read to the host;
* ``g_search_knapsack``: the search over the group size ``g`` with a
  knapsack packing per candidate (:func:`.grouping.search_group_size`);
* ``tables``: the packing as small index tables
  (:meth:`.WindowPacking.from_packing`).

:func:`planning_split` runs the same functions in the same order, times each
part, times ``make_plans`` itself as a whole, and checks that its plans
equal ``make_plans``' (the same ``g``, groups and window counts), so the
split cannot silently drift from the code it describes.
"""
import math
import statistics
import time
from typing import Dict, List, Tuple

import torch
from torch import Tensor

from ..models.utils.grouping import search_group_size
from ..models.utils.masking import (random_unit_mask, unit_grid,
                                    visible_unit_ids)
from ..models.utils.window_plan import WindowPacking, unit_window_table

#: the parts, in the order they run
PARTS = ('unit_ids', 'window_counts', 'histogram', 'g_search_knapsack',
         'tables')


def _split_once(backbone, mask: Tensor, img_hw: Tuple[int, int]
                ) -> Tuple[Dict[str, float], list]:
    """One timed pass over the parts; returns seconds per part and the
    ``(stage, key, g, num_groups, counts)`` of every grouped plan."""
    t = {p: 0.0 for p in PARTS}
    clock = time.perf_counter
    t0 = clock()
    grid = unit_grid(img_hw, backbone.mask_unit)
    mask = mask.reshape(mask.shape[0], -1).cpu().bool()
    vis = visible_unit_ids(mask)  # (B, n_vis)
    visible = (~mask).float()  # (B, L)
    levels = int(math.log2(backbone.mask_unit // backbone.patch_size))
    t['unit_ids'] += clock() - t0
    out = []
    for i, stage in enumerate(backbone.stages):
        lv = levels - i
        hw = (grid[0] << lv, grid[1] << lv)
        seen = set()
        for key in backbone._block_keys(stage, hw):
            if key in seen:
                continue
            seen.add(key)
            window, shift = key
            if hw[0] <= window and hw[1] <= window and shift == 0:
                continue  # one window: no grouping, no host work
            t0 = clock()
            table = unit_window_table(tuple(grid), lv, window, shift)
            counts = (visible @ table).round_().long().reshape(-1)
            t1 = clock()
            hist = torch.bincount(counts, minlength=window * window +
                                  1).tolist()
            t2 = clock()
            g, packing = search_group_size(hist, backbone.group_cost)
            t3 = clock()
            pack = WindowPacking.from_packing(packing, g)
            t4 = clock()
            for p, dt in zip(PARTS[1:], (t1 - t0, t2 - t1, t3 - t2,
                                         t4 - t3)):
                t[p] += dt
            out.append((i, key, pack.group_size, pack.num_groups, counts))
    return t, out


def _check_same(mine: list, plans: List[dict]) -> None:
    """Raise unless ``mine`` describes the grouped plans of ``plans``."""
    theirs = [(i, key, p.packing.group_size, p.packing.num_groups, p.counts)
              for i, sp in enumerate(plans) for key, p in sp.items()
              if getattr(p, 'packing', None) is not None]
    ok = len(mine) == len(theirs) and all(
        a[:4] == b[:4] and torch.equal(a[4], b[4])
        for a, b in zip(mine, theirs))
    if not ok:
        raise RuntimeError(
            'planning_split no longer mirrors make_plans (its plans differ: '
            f'{[m[:4] for m in mine]} vs {[t[:4] for t in theirs]}); update '
            'greenmim_mm/analysis/planning_split.py.')


def planning_split(backbone, batch: int, img_hw: Tuple[int, int],
                   steps: int = 5, mask_ratio: float = 0.75,
                   seed: int = 0) -> Dict[str, float]:
    """Median host seconds per step of each planning part, and of
    ``make_plans`` as a whole.

    Args:
        backbone (GreenSwinTransformer): The backbone (on any device).
        batch (int): Samples per step.
        img_hw (tuple[int, int]): Image size.
        steps (int): Timed steps (a fresh mask each). Defaults to 5.
        mask_ratio (float): Defaults to 0.75.
        seed (int): Seed of the masks. Defaults to 0.

    Returns:
        dict: Median seconds per step of each of :data:`PARTS`, of their
        ``sum``, and of ``make_plans`` (the real call, timed separately),
        and ``make_plans_min`` (its fastest step: the noise floor on a
        shared machine).
    """
    if steps < 1:
        raise ValueError(f'planning_split needs steps >= 1, got {steps}.')
    gen = torch.Generator().manual_seed(seed)
    grid = unit_grid(img_hw, backbone.mask_unit)
    rows: Dict[str, List[float]] = {p: [] for p in PARTS + ('sum',
                                                            'make_plans')}
    for step in range(steps + 1):  # the first step fills the table cache
        mask = random_unit_mask(batch, grid, mask_ratio, generator=gen)
        t0 = time.perf_counter()
        plans = backbone.make_plans(mask, img_hw)
        whole = time.perf_counter() - t0
        parts, mine = _split_once(backbone, mask, img_hw)
        _check_same(mine, plans)
        if step == 0:
            continue
        for p in PARTS:
            rows[p].append(parts[p])
        rows['sum'].append(sum(parts.values()))
        rows['make_plans'].append(whole)
    res = {k: statistics.median(v) for k, v in rows.items()}
    res['make_plans_min'] = min(rows['make_plans'])
    return res


def format_split(name: str, batch: int, res: Dict[str, float]) -> str:
    """One line: ms per step and us per sample of each part."""
    return (f'{name}, batch {batch}: make_plans '
            f"{res['make_plans'] * 1e3:.2f} ms/step "
            f"({res['make_plans'] * 1e6 / batch:.1f} us/sample; fastest "
            f"step {res['make_plans_min'] * 1e3:.2f} ms); parts: " +
            ', '.join(f'{p} {res[p] * 1e3:.2f} ms' for p in PARTS) +
            f" (sum {res['sum'] * 1e3:.2f} ms)")
