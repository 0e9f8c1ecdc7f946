"""Group Window Attention plans in two halves: windows on the host, tokens
on the model's device.

The host half (:func:`plan_unit_windows`) works on windows only. Every
window of a masked map covers fixed parts of fixed mask units, so the token
count of every window is ``visible @ table`` with a static ``(units,
windows)`` table per stage and shift (:func:`unit_window_table`). The
histogram of counts, the knapsack packing and the search for ``g`` (see
:mod:`.grouping`) then give a handful of *compositions*; nothing on the host
has a token dimension, and the number of host ops does not depend on the
batch size.

The device half (:meth:`UnitGroupPlan.to`, :func:`expand_group_plan`) places
every window in a group slot (:func:`assign_windows`) and every token in its
window's slots, with vectorised ops of static shapes: no ``nonzero``, no
``item``, no data-sized output, so it is queued on a GPU without a
host-device sync.
"""
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from .grouping import (Composition, GroupPlan, pack_windows,
                       search_group_size, window_ids)
from .masking import token_coords
from .transfer import to_device

Packing = List[Tuple[Composition, int]]


# --------------------------------------------------------------------------
# host half
# --------------------------------------------------------------------------
@dataclass
class WindowPacking:
    """A packing of windows into groups, as small tables.

    Compositions are listed in packing order; composition ``k`` fills
    ``repeats[k]`` groups with ``sizes[k]`` windows each, whose token counts
    (descending) and offsets inside the group are the ``sizes[k]`` entries
    of ``counts`` and ``offsets`` from ``starts[k]`` on.

    Attributes:
        group_size (int): ``g``.
        num_groups (int): ``G``, the sum of ``repeats``.
        num_slots (int): Windows placed, ``sum(repeats * sizes)``.
        counts (Tensor): ``(E,)`` long, window token counts.
        offsets (Tensor): ``(E,)`` long, first slot of each window.
        sizes (Tensor): ``(K,)`` long, windows per composition.
        repeats (Tensor): ``(K,)`` long, groups per composition.
        num_pairs (int): Token pairs of the same window over all groups,
            ``sum(count ** 2)`` (static size of the bias backward).
    """
    group_size: int
    num_groups: int
    num_slots: int
    counts: Tensor
    offsets: Tensor
    sizes: Tensor
    repeats: Tensor
    num_pairs: int

    @classmethod
    def from_packing(cls, packing: Packing, group_size: int
                     ) -> 'WindowPacking':
        """Tables of a :func:`.grouping.pack_windows` result."""
        counts: List[int] = []
        offsets: List[int] = []
        sizes: List[int] = []
        pairs = 0
        for comp, rep in packing:
            pairs += rep * sum(k * v * v for v, k in comp.items())
            c = [v for v in sorted(comp, reverse=True) for _ in range(comp[v])]
            offsets += [sum(c[:j]) for j in range(len(c))]
            counts += c
            sizes.append(len(c))
        repeats = [rep for _, rep in packing]
        return cls(group_size, sum(repeats),
                   sum(r * s for r, s in zip(repeats, sizes)),
                   torch.tensor(counts, dtype=torch.long),
                   torch.tensor(offsets, dtype=torch.long),
                   torch.tensor(sizes, dtype=torch.long),
                   torch.tensor(repeats, dtype=torch.long), pairs)


def pack_histogram(hist: Sequence[int],
                   coeffs: Tuple[float, float] = (1.0, 0.0),
                   group_size: Optional[int] = None) -> WindowPacking:
    """Search ``g`` (unless given) and pack a histogram of window counts.

    Args:
        hist (Sequence[int]): ``hist[v]`` windows hold ``v`` tokens.
        coeffs (tuple[float, float]): Cost model ``(a, b)``.
            Defaults to (1.0, 0.0).
        group_size (int, optional): Force ``g``. Defaults to None.

    Returns:
        WindowPacking: The packing.
    """
    if group_size is None:
        g, packing = search_group_size(hist, coeffs)
    else:
        g, packing = group_size, pack_windows(hist, group_size)
    return WindowPacking.from_packing(packing, g)


@functools.lru_cache(maxsize=128)
def unit_window_table(grid: Tuple[int, int], levels: int, window: int,
                      shift: int) -> Tensor:
    """Tokens of every mask unit in every window of one sample (static).

    Args:
        grid (tuple[int, int]): Unit grid ``(Hu, Wu)``.
        levels (int): log2 of the unit side in tokens of the stage.
        window (int): Window size.
        shift (int): Effective shift.

    Returns:
        Tensor: ``(Hu * Wu, num_windows)`` float32 (exact small integers);
        do not modify it (it is cached).
    """
    units = grid[0] * grid[1]
    side = 1 << levels
    hw = (grid[0] * side, grid[1] * side)
    coords = token_coords(torch.arange(units)[None], grid[1], levels)
    wid, per_sample = window_ids(coords, hw, window, shift)  # (1, U*T_u)
    unit = torch.arange(units).repeat_interleave(side * side)  # (U*T_u,)
    table = torch.zeros(units, per_sample)
    table.index_put_((unit, wid[0]), torch.ones(()), accumulate=True)
    return table


@dataclass(eq=False)
class UnitGroupPlan:
    """Host half of a Group Window Attention plan for unit masks.

    ``to(device)`` expands it on ``device`` into a :class:`GroupPlan`
    (cached per device, so every block that shares it shares one expansion
    and one ``cache``). Reading a :class:`GroupPlan` attribute on this
    object (e.g. ``token_slot``) expands it on the CPU.

    Attributes:
        vis (Tensor): ``(B, n_vis)`` visible unit ids (host).
        grid_w (int): Width of the unit grid.
        levels (int): log2 of the unit side in tokens of the stage.
        hw (tuple[int, int]): Feature-map size.
        window (int): Window size.
        shift (int): Effective shift.
        counts (Tensor, optional): ``(B * num_windows,)`` long token count of
            every window (host); None for a single-window plan.
        packing (WindowPacking, optional): None for a single-window plan.
    """
    vis: Tensor
    grid_w: int
    levels: int
    hw: Tuple[int, int]
    window: int
    shift: int
    counts: Optional[Tensor] = None
    packing: Optional[WindowPacking] = None
    _uploaded: Dict[torch.device, tuple] = field(
        default_factory=dict, repr=False)
    _expanded: Dict[torch.device, GroupPlan] = field(
        default_factory=dict, repr=False)

    @property
    def num_tokens(self) -> int:
        return self.vis.numel() << (2 * self.levels)

    @property
    def group_size(self) -> int:
        if self.packing is None:
            return self.vis.shape[1] << (2 * self.levels)
        return self.packing.group_size

    @property
    def num_groups(self) -> int:
        if self.packing is None:
            return self.vis.shape[0]
        return self.packing.num_groups

    def upload(self, device) -> 'UnitGroupPlan':
        """Queue the copies of the host tensors to ``device`` (from pinned
        memory, see :func:`.transfer.to_device`); returns ``self``."""
        device = torch.device(device)
        if device not in self._uploaded:
            pack = self.packing
            tables = () if pack is None else (
                self.counts, pack.sizes, pack.repeats, pack.counts,
                pack.offsets)
            self._uploaded[device] = tuple(
                to_device(t, device) for t in (self.vis, ) + tables)
        return self

    def to(self, device, non_blocking: bool = False) -> GroupPlan:
        """The token-level plan on ``device`` (queued, no sync; built once
        per device). ``non_blocking`` is kept for compatibility: copies
        never block."""
        device = torch.device(device)
        if device not in self._expanded:
            vis, *tables = self.upload(device)._uploaded[device]
            coords = token_coords(vis, self.grid_w, self.levels)
            if self.packing is None:
                plan = plan_single_window(coords, self.window)
            else:
                counts, sizes, repeats, p_counts, p_offsets = tables
                pack = dataclasses.replace(
                    self.packing, counts=p_counts, offsets=p_offsets,
                    sizes=sizes, repeats=repeats)
                plan = expand_group_plan(coords, self.hw, self.window,
                                         self.shift, counts, pack)
            self._expanded[device] = plan
        return self._expanded[device]

    def __getattr__(self, name: str):
        # only reached for names that are not attributes of this object
        if name.startswith('_') or not (
                name in GroupPlan.__dataclass_fields__
                or isinstance(getattr(GroupPlan, name, None), property)):
            raise AttributeError(name)
        return getattr(self.to('cpu'), name)

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state['_uploaded'] = {}  # device copies are rebuilt where needed
        state['_expanded'] = {}
        return state


def plan_unit_windows(vis: Tensor, visible: Tensor, grid: Tuple[int, int],
                      levels: int, window: int, shift: int,
                      coeffs: Tuple[float, float] = (1.0, 0.0),
                      group_size: Optional[int] = None) -> UnitGroupPlan:
    """Host half of a plan for one stage and one shift, from the unit mask.

    Args:
        vis (Tensor): ``(B, n_vis)`` visible unit ids (host).
        visible (Tensor): ``(B, Hu * Wu)`` float32, 1 = visible unit (host).
        grid (tuple[int, int]): Unit grid ``(Hu, Wu)``.
        levels (int): log2 of the unit side in tokens of the stage.
        window (int): Window size.
        shift (int): Effective shift (see :func:`.effective_shift`).
        coeffs (tuple[float, float]): Cost model ``(a, b)``.
            Defaults to (1.0, 0.0).
        group_size (int, optional): Force ``g``. Defaults to None.

    Returns:
        UnitGroupPlan: The host half; no tensor in it has a token dimension.
    """
    side = 1 << levels
    hw = (grid[0] * side, grid[1] * side)
    if hw[0] <= window and hw[1] <= window and shift == 0:
        return UnitGroupPlan(vis, grid[1], levels, hw, window, shift)
    table = unit_window_table(tuple(grid), levels, window, shift)
    # (B, U) @ (U, nW) -> (B, nW) -> (B*nW,)
    counts = (visible @ table).round_().long().reshape(-1)
    hist = torch.bincount(counts, minlength=window * window + 1).tolist()
    return UnitGroupPlan(vis, grid[1], levels, hw, window, shift, counts,
                         pack_histogram(hist, coeffs, group_size))


# --------------------------------------------------------------------------
# device half
# --------------------------------------------------------------------------
def assign_windows(counts: Tensor, packing: WindowPacking,
                   num_empty: Optional[int] = None) -> Tuple[Tensor, Tensor]:
    """Place every window in a group slot of a packing (static shapes).

    Windows and slots of equal count are matched in order: both lists are
    sorted by count (stably), empty windows first.

    Args:
        counts (Tensor): ``(num_windows,)`` token count of every window, on
            the device.
        packing (WindowPacking): The packing (host tables).
        num_empty (int, optional): Number of empty windows; derived from the
            packing when None.

    Returns:
        tuple[Tensor, Tensor]: ``(num_windows,)`` group index and offset of
        the window's first token in the group (empty windows get 0, 0).
    """
    device = counts.device
    win_grp = torch.zeros_like(counts)
    win_off = torch.zeros_like(counts)
    n_slots = packing.num_slots
    if n_slots == 0:
        return win_grp, win_off
    sizes, repeats, cnt, off = (to_device(t, device) for t in (
        packing.sizes, packing.repeats, packing.counts, packing.offsets))
    starts = sizes.cumsum(0) - sizes  # (K,) first entry of a composition
    # index of the run each position falls in, for runs of given lengths:
    # searchsorted on the run ends (repeat_interleave without its sync)
    group_comp = torch.searchsorted(  # (G,) composition of each group
        repeats.cumsum(0), torch.arange(packing.num_groups, device=device),
        right=True)
    per_group = sizes[group_comp]  # (G,) windows of each group
    ends = per_group.cumsum(0)  # (G,) one past the last slot of a group
    slot_grp = torch.searchsorted(  # (S,) group of each slot
        ends, torch.arange(n_slots, device=device), right=True)
    entry = starts[group_comp[slot_grp]] + (
        torch.arange(n_slots, device=device)
        - (ends - per_group)[slot_grp])  # (S,) entry in the tables
    slot_cnt, slot_off = cnt[entry], off[entry]  # (S,)
    if num_empty is None:
        num_empty = counts.numel() - n_slots
    w_order = counts.argsort(stable=True)[num_empty:]  # (S,) non-empty
    s_order = slot_cnt.argsort(stable=True)
    win_grp[w_order] = slot_grp[s_order]
    win_off[w_order] = slot_off[s_order]
    return win_grp, win_off


def expand_group_plan(coords: Tensor, hw: Tuple[int, int], window: int,
                      shift: int, counts: Tensor,
                      packing: WindowPacking) -> GroupPlan:
    """Token-level plan from window counts and a packing (static shapes).

    Args:
        coords (Tensor): ``(B, N, 2)`` visible-token coordinates.
        hw (tuple[int, int]): Feature-map size.
        window (int): Window size.
        shift (int): Effective shift.
        counts (Tensor): ``(B * num_windows,)`` long window token counts, on
            the device of ``coords``.
        packing (WindowPacking): The packing.

    Returns:
        GroupPlan: The plan, on the device of ``coords``.
    """
    b, n = coords.shape[:2]
    device = coords.device
    g = packing.group_size
    win_grp, win_off = assign_windows(counts, packing)
    wid = window_ids(coords, hw, window, shift)[0].reshape(-1)  # (B*N,)
    # rank of each token inside its window (tokens keep their order)
    order = wid.argsort(stable=True)
    starts = counts.cumsum(0) - counts  # (B*nW,)
    rank = torch.empty_like(wid)
    rank[order] = torch.arange(wid.numel(), device=device) - starts[wid[order]]
    token_slot = win_grp[wid] * g + win_off[wid] + rank  # (B*N,)
    # per-slot window label (padding: a unique negative label) and coords
    n_slots = packing.num_groups * g
    labels = -1 - torch.arange(n_slots, device=device)
    labels[token_slot] = wid
    slot_rc = torch.zeros(n_slots, 2, dtype=torch.long, device=device)
    slot_rc[token_slot] = coords.reshape(-1, 2)
    return GroupPlan(token_slot, slot_rc, labels, window,
                     packing.num_groups, g, b * n, num_pairs=packing.num_pairs)


# --------------------------------------------------------------------------
# any coordinates (one device)
# --------------------------------------------------------------------------
def plan_single_window(coords: Tensor, window: int) -> GroupPlan:
    """Plan for a stage whose map fits in one window: each sample attends
    over all its own visible tokens, no padding.

    Args:
        coords (Tensor): ``(B, N, 2)`` token coordinates.
        window (int): Window size (for the bias index).

    Returns:
        GroupPlan: with ``G = B`` and ``g = N``.
    """
    b, n = coords.shape[:2]
    return GroupPlan(
        token_slot=torch.arange(b * n, device=coords.device),
        slot_rc=coords.reshape(b * n, 2),
        slot_label=torch.arange(b, device=coords.device).repeat_interleave(n),
        window=window, num_groups=b, group_size=n, num_tokens=b * n,
        identity=True, num_pairs=b * n * n)


def plan_group_attention(coords: Tensor,
                         hw: Tuple[int, int],
                         window: int,
                         shift: int,
                         coeffs: Tuple[float, float] = (1.0, 0.0),
                         group_size: Optional[int] = None) -> GroupPlan:
    """Plan Group Window Attention for any token coordinates (one device).

    The general form of :func:`plan_unit_windows` + :meth:`UnitGroupPlan.to`
    (same packing and layout): window counts come from the tokens, so it
    reads them back to the host; the backbones use the unit-mask form.

    Args:
        coords (Tensor): ``(B, N, 2)`` visible-token coordinates.
        hw (tuple[int, int]): Feature-map size.
        window (int): Window size.
        shift (int): Effective shift (see :func:`effective_shift`).
        coeffs (tuple[float, float]): Cost model ``(a, b)``.
            Defaults to (1.0, 0.0).
        group_size (int, optional): Force ``g`` instead of searching.
            Defaults to None.

    Returns:
        GroupPlan: The plan.
    """
    b = coords.shape[0]
    if hw[0] <= window and hw[1] <= window and shift == 0:
        return plan_single_window(coords, window)
    wid, per_sample = window_ids(coords, hw, window, shift)
    counts = torch.bincount(wid.reshape(-1), minlength=b * per_sample)
    hist = torch.bincount(counts, minlength=window * window + 1).tolist()
    packing = pack_histogram(hist, coeffs, group_size)
    return expand_group_plan(coords, hw, window, shift, counts, packing)


def plans_to_device(plans: List[Dict], device) -> List[Dict]:
    """Move per-stage plan dicts to ``device``: every host-to-device copy
    first, then the device-side expansions (on a GPU, a copy queued after a
    kernel waits for it).

    Args:
        plans (list[dict]): Per stage, plans with a ``to(device)`` method
            or None; host halves (:class:`UnitGroupPlan`,
            :class:`.UnitSparseConvPlan`) also have ``upload(device)``.
        device (torch.device): The model's device.

    Returns:
        list[dict]: The same structure of device plans.
    """
    device = torch.device(device)

    def lazy(p) -> bool:  # a host half, expanded on the device
        return hasattr(p, 'upload')

    moved = [{k: p if p is None else p.upload(device) if lazy(p) else
              p.to(device) for k, p in sp.items()} for sp in plans]
    return [{k: p.to(device) if lazy(p) else p for k, p in sp.items()}
            for sp in moved]
