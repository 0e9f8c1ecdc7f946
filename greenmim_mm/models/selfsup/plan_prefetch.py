"""Masks and grouping plans of the next iteration, made in a background
thread while the current iteration computes.

Masks do not depend on the images, only on the batch size, the unit grid
and the iteration's seed, so iteration ``i + 1``'s masks and plans can be
made while iteration ``i`` runs. On a GPU the main thread spends much of a
step waiting for the device (with the GIL released), which is when the
planning thread runs: planning leaves the critical path.
"""
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Hashable, Optional

import numpy as np
import torch

from ..utils.bias_gather import prepare_bias
from ..utils.grouping import GroupPlan
from ..utils.window_plan import UnitGroupPlan


def iteration_generator(base_seed: int, iteration: int) -> torch.Generator:
    """CPU generator for the masks of one training iteration.

    Args:
        base_seed (int): The process's torch seed (run seed, plus the rank
            with ``diff_rank_seed``).
        iteration (int): Runner iteration.

    Returns:
        torch.Generator: Seeded by ``(base_seed, iteration)``.
    """
    seed = np.random.SeedSequence([int(base_seed),
                                   int(iteration)]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(seed))


def warm_plans(plans: Any, device: torch.device) -> None:
    """Expand every plan of a (nested) list/dict of plans and build its
    lazy index tensors (the bias index and its backward reduction), when the
    model trains on the CPU; the forward then reuses them. For another
    device nothing is built here: the token-level half runs on that device
    (see :meth:`.UnitGroupPlan.to`), so nothing is built twice."""
    if device.type != 'cpu':
        return
    if isinstance(plans, UnitGroupPlan):  # token-level half, on the CPU
        plans = plans.to(device)
    if isinstance(plans, GroupPlan):
        prepare_bias(plans)
    elif isinstance(plans, dict):
        for p in plans.values():
            warm_plans(p, device)
    elif isinstance(plans, (list, tuple)):
        for p in plans:
            warm_plans(p, device)


class PlanPrefetcher:
    """One background job at a time, looked up by a key.

    ``take(key)`` returns the result of the job submitted under ``key`` (or
    None when there is none, e.g. at the first step or after the batch size
    changed); ``submit(key, fn)`` starts the next one. Copies and pickles
    of a prefetcher (``deepcopy`` of a model, e.g. for EMA) start empty.
    """

    def __init__(self) -> None:
        self._executor: Optional[ThreadPoolExecutor] = None
        self._key: Optional[Hashable] = None
        self._future: Optional[Future] = None

    def take(self, key: Hashable) -> Any:
        future, self._future = self._future, None
        if future is None or key != self._key:
            return None
        return future.result()

    def submit(self, key: Hashable, fn: Callable[[], Any]) -> None:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=1, thread_name_prefix='greenmim-plan')
        self._key, self._future = key, self._executor.submit(fn)

    def __getstate__(self) -> dict:
        return {}

    def __setstate__(self, state: dict) -> None:
        self.__init__()

    def __deepcopy__(self, memo: dict) -> 'PlanPrefetcher':
        return PlanPrefetcher()
