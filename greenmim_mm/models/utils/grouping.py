"""Optimal grouping for Group Window Attention (pure planning functions).

Each (regular or shifted) window of a masked feature map holds between 0 and
``window ** 2`` visible tokens. Windows are packed into groups of a fixed
size ``g`` so one batched attention covers every window of every sample of
the batch:

1. For a candidate ``g``, groups are filled one at a time: the largest
   remaining window, plus the subset of the other remaining windows whose
   token count fills the group closest to ``g`` without exceeding it: a 0/1
   knapsack (weight = value = count) solved exactly by DP. Counts are small
   integers, so the DP runs on the *histogram* of counts (bounded
   knapsack, bitset DP with binary splitting) and an optimal subset is
   reused for as many groups as the histogram allows: the cost is
   independent of the number of windows.
2. The ``g`` that minimises the modelled attention cost
   ``n_groups(g) * (a * g**2 + b * g)`` is searched from the largest window
   count upwards (up to twice that), skipping every ``g`` whose perfect-
   packing lower bound cannot beat the best cost found so far.

Only index tensors leave this module (see :class:`GroupPlan`).
"""
import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .transfer import to_device

#: a composition: {window token count: number of such windows in the group}
Composition = Dict[int, int]


@dataclass
class GroupPlan:
    """Index tensors that drive one Group Window Attention layout.

    Attributes:
        token_slot (Tensor): ``(B * N,)`` long; slot of each token in the
            flattened ``(num_groups * group_size)`` padded layout.
        slot_rc (Tensor): ``(num_groups * g, 2)`` long; ``(row, col)`` of the
            token in each slot (0 for padding).
        slot_label (Tensor): ``(num_groups * g,)`` long; window of the token
            in each slot, a unique negative number for padding.
        window (int): Window size ``w`` (for the bias index).
        num_groups (int): Number of groups ``G``.
        group_size (int): Group size ``g``.
        num_tokens (int): Visible tokens ``B * N``.
        identity (bool): True when ``token_slot`` is ``arange`` (one window
            per sample, no padding), so gathering can be skipped.
        num_pairs (int, optional): Slot pairs of the same window, i.e. the
            sum of squared window token counts, known on the host (it gives
            the bias backward static shapes, see :mod:`.bias_gather`); None
            counts them on the plan's device (a sync).
        cache (dict): Tensors derived from the plan on its device (e.g. the
            bias index and its backward reduction), built once and shared
            by every block that uses the plan; a moved plan starts empty.
    """
    token_slot: Tensor
    slot_rc: Tensor
    slot_label: Tensor
    window: int
    num_groups: int
    group_size: int
    num_tokens: int
    identity: bool = False
    num_pairs: Optional[int] = None
    _same_window: Optional[Tensor] = field(default=None, repr=False)
    cache: Dict[str, Tensor] = field(default_factory=dict, repr=False)

    @property
    def padding_waste(self) -> float:
        """Padded slots divided by visible tokens."""
        slots = self.num_groups * self.group_size
        return (slots - self.num_tokens) / max(self.num_tokens, 1)

    @property
    def same_window(self) -> Tensor:
        """``(G, g, g)`` bool, True where two slots share a window (may
        attend each other): the blocking mask of attention without a
        position bias. Built once on the plan's device."""
        if self._same_window is None:
            lab = self.slot_label.view(-1, self.group_size)  # (G, g)
            self._same_window = lab[:, :, None] == lab[:, None, :]
        return self._same_window

    def pairs(self) -> int:
        """``num_pairs``, counted on the device (a sync) when unknown."""
        if self.num_pairs is None:
            self.num_pairs = int(self.same_window.sum())
        return self.num_pairs

    def to(self, device: torch.device, non_blocking: bool = False
           ) -> 'GroupPlan':
        """Move the index tensors to ``device`` (from pinned memory to a
        GPU, so the host never waits; see :func:`.transfer.to_device`).
        ``non_blocking`` is kept for compatibility: copies never block."""
        if self.token_slot.device == torch.device(device):
            return self
        return GroupPlan(
            *(to_device(t, device)
              for t in (self.token_slot, self.slot_rc, self.slot_label)),
            self.window, self.num_groups, self.group_size, self.num_tokens,
            self.identity, self.num_pairs)


# --------------------------------------------------------------------------
# windows
# --------------------------------------------------------------------------
def effective_shift(hw: Tuple[int, int], window: int, shift: int,
                    pad_small_map: bool = False) -> int:
    """Shift actually applied by mmpretrain's ``ShiftWindowMSA``.

    A map no larger than the window is not shifted, unless ``pad_small_map``.

    Args:
        hw (tuple[int, int]): Feature-map size.
        window (int): Window size.
        shift (int): Configured shift.
        pad_small_map (bool): mmpretrain's option. Defaults to False.

    Returns:
        int: The shift to use.
    """
    if min(hw) <= window and not pad_small_map:
        return 0
    return shift


def window_ids(coords: Tensor, hw: Tuple[int, int], window: int,
               shift: int) -> Tuple[Tensor, int]:
    """Window of every token, for regular (``shift=0``) or shifted windows.

    A cyclic shift by ``s`` followed by mmpretrain's region mask is the same
    as cutting the unshifted map into bands ``(r + window - s) // window``;
    padding to a multiple of the window only appends masked positions.

    Args:
        coords (Tensor): ``(B, N, 2)`` token ``(row, col)``.
        hw (tuple[int, int]): Feature-map size ``(H, W)``.
        window (int): Window size.
        shift (int): Shift size (0 for regular windows).

    Returns:
        tuple[Tensor, int]: ``(B, N)`` window id, unique across the batch,
        and the number of windows per sample.
    """
    h_pad = math.ceil(hw[0] / window) * window
    w_pad = math.ceil(hw[1] / window) * window
    off = (window - shift) % window
    n_r = (h_pad + off + window - 1) // window
    n_c = (w_pad + off + window - 1) // window
    row = (coords[..., 0] + off) // window
    col = (coords[..., 1] + off) // window
    per_sample = n_r * n_c
    batch = torch.arange(coords.shape[0], device=coords.device)[:, None]
    return batch * per_sample + row * n_c + col, per_sample


# --------------------------------------------------------------------------
# knapsack packing on a histogram of window counts
# --------------------------------------------------------------------------
def best_subset(hist: Sequence[int], cap: int) -> Composition:
    """Subset of windows whose total count is the largest one <= ``cap``.

    Exact bounded knapsack (weight = value = count) with a bitset DP;
    multiplicities are split in powers of two.

    Args:
        hist (Sequence[int]): ``hist[v]`` windows hold ``v`` tokens.
        cap (int): Group size ``g``.

    Returns:
        Composition: ``{count: how many}`` of the chosen windows.
    """
    full = (1 << (cap + 1)) - 1
    items: List[Tuple[int, int]] = []  # (count, multiplicity)
    reach = [1]
    for v in range(min(cap, len(hist) - 1), 0, -1):
        if not hist[v]:
            continue
        m = min(int(hist[v]), cap // v)
        k = 1
        while m > 0:
            take = k if k < m else m
            items.append((v, take))
            reach.append((reach[-1] | (reach[-1] << (v * take))) & full)
            m -= take
            k <<= 1
        if reach[-1] >> cap:
            break  # a perfect fill: no further item can do better
    target = reach[-1].bit_length() - 1
    comp: Composition = {}
    for i in range(len(items) - 1, -1, -1):
        if target == 0:
            break
        if not (reach[i] >> target) & 1:
            v, take = items[i]
            comp[v] = comp.get(v, 0) + take
            target -= v * take
    return comp


def pack_windows(hist: Sequence[int], group_size: int
                 ) -> List[Tuple[Composition, int]]:
    """Pack windows into groups, filling one group at a time optimally.

    Each group takes the largest remaining window, then the subset of the
    other remaining windows that fills it closest to ``group_size`` (exact
    knapsack, :func:`best_subset`). Seeding with the largest window (as in
    the minimum-bin-slack heuristic) avoids stranding big windows at the end.

    Args:
        hist (Sequence[int]): ``hist[v]`` windows hold ``v`` tokens
            (``hist[0]``, empty windows, is ignored).
        group_size (int): ``g``, at least the largest count.

    Returns:
        list[tuple[Composition, int]]: ``(composition, repeats)`` pairs; the
        number of groups is the sum of ``repeats``.
    """
    remaining = [int(h) for h in hist]
    if remaining:
        remaining[0] = 0  # empty windows need no slot
    if any(remaining[v] for v in range(group_size + 1, len(remaining))):
        raise ValueError(f'group_size={group_size} is smaller than the '
                         f'largest window ({len(remaining) - 1} tokens).')
    out = []
    top = len(remaining) - 1
    while top > 0:
        if not remaining[top]:
            top -= 1
            continue
        remaining[top] -= 1
        comp = best_subset(remaining, group_size - top)
        remaining[top] += 1
        comp[top] = comp.get(top, 0) + 1
        # the same subset stays optimal while it is still available:
        # removing windows can only lower the best reachable total
        rep = min(remaining[v] // k for v, k in comp.items())
        for v, k in comp.items():
            remaining[v] -= k * rep
        out.append((comp, rep))
    return out


def num_groups(packing: List[Tuple[Composition, int]]) -> int:
    """Total number of groups of a packing."""
    return sum(rep for _, rep in packing)


def group_cost(n_groups: int, group_size: int,
               coeffs: Tuple[float, float] = (1.0, 0.0)) -> float:
    """Modelled attention cost ``n_groups * (a * g**2 + b * g)``."""
    a, b = coeffs
    return n_groups * (a * group_size**2 + b * group_size)


def search_group_size(hist: Sequence[int],
                      coeffs: Tuple[float, float] = (1.0, 0.0),
                      max_factor: float = 2.0
                      ) -> Tuple[int, List[Tuple[Composition, int]]]:
    """Find the group size with the lowest modelled cost.

    Args:
        hist (Sequence[int]): Histogram of window token counts.
        coeffs (tuple[float, float]): ``(a, b)`` of the cost model.
            Defaults to (1.0, 0.0).
        max_factor (float): Largest ``g`` tried, as a multiple of the
            largest window count. Defaults to 2.0.

    Returns:
        tuple[int, list]: The best ``g`` and its packing. Ties go to the
        smaller ``g``.
    """
    nz = [v for v in range(1, len(hist)) if hist[v]]
    if not nz:
        return 1, []
    g0 = nz[-1]
    total = sum(v * int(hist[v]) for v in nz)
    best_g, best_pack = g0, pack_windows(hist, g0)
    best_cost = group_cost(num_groups(best_pack), g0, coeffs)
    for g in range(g0 + 1, int(g0 * max_factor) + 1):
        if group_cost(math.ceil(total / g), g, coeffs) >= best_cost:
            continue  # even a perfect packing cannot win
        pack = pack_windows(hist, g)
        cost = group_cost(num_groups(pack), g, coeffs)
        if cost < best_cost:
            best_g, best_pack, best_cost = g, pack, cost
    return best_g, best_pack
