"""Keep a non-finite sample from spoiling the other samples of a batch.

Group Window Attention packs windows of different samples into one group,
where a blocked pair gets attention weight 0; but ``0 * nan`` is ``nan``, so
one sample with a NaN or Inf pixel would make every sample sharing a group
non-finite. The dense network keeps such a value inside its own sample.
The Green backbones therefore zero the visible tokens of a sample whose
embedded input is not finite, run the batch, and give that sample NaN
outputs: the other samples' outputs are exactly what they would be
without it, the bad sample's loss is NaN as in the dense network (and an
AMP GradScaler skips that step). A value that turns non-finite only inside
the network (e.g. an fp16 overflow) is not isolated.
"""
from typing import Sequence, Tuple

import torch
from torch import Tensor


def isolate_nonfinite(x: Tensor) -> Tuple[Tensor, Tensor]:
    """Zero every sample that holds a non-finite value.

    Args:
        x (Tensor): ``(B, N, C)`` tokens.

    Returns:
        tuple[Tensor, Tensor]: The tokens, with non-finite samples zeroed,
        and the ``(B,)`` bool tensor of those samples (on ``x``'s device;
        nothing is read back to the host).
    """
    bad = ~torch.isfinite(x).flatten(1).all(1)  # (B,)
    return x.masked_fill(bad[:, None, None], 0.), bad


def mark_nonfinite(outs: Sequence[Tensor], bad: Tensor) -> Tuple[Tensor]:
    """Set the outputs of the samples flagged by :func:`isolate_nonfinite`
    to NaN.

    Args:
        outs (Sequence[Tensor]): ``(B, N_i, C_i)`` outputs.
        bad (Tensor): ``(B,)`` bool.

    Returns:
        tuple[Tensor]: The outputs.
    """
    return tuple(o.masked_fill(bad[:, None, None], float('nan'))
                 for o in outs)
