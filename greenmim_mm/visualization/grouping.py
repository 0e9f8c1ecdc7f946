"""Pictures of Group Window Attention plans.

:func:`grouping_layouts` reads, for one masked image, the plans that a
:class:`GreenSwinTransformer` makes itself (:meth:`make_plans`) and turns
each ``GroupPlan`` into arrays that are easy to draw; nothing is planned
here. :func:`draw_grouping` draws one row per (stage, window, shift): the
visible tokens on the feature map coloured by window, and the groups as
horizontal bars of ``group_size`` slots (slots coloured by window, padding
grey).
"""
import io
import math
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import torch
from torch import Tensor, nn

from ..models.utils.grouping import GroupPlan
from ..models.utils.masking import unit_grid
from ..models.utils.window_plan import UnitGroupPlan

#: RGB of padded slots and of masked positions
PAD_RGB = (0.82, 0.82, 0.82)


@dataclass
class GroupLayout:
    """What one ``GroupPlan`` does to one sample's visible tokens.

    Attributes:
        stage (int): Stage index.
        window (int): Window size.
        shift (int): Effective shift (0 = regular windows).
        hw (tuple[int, int]): Feature-map size of the stage.
        coords (Tensor): ``(N, 2)`` long ``(row, col)`` of visible tokens.
        window_id (Tensor): ``(N,)`` long window of each token
            (``GroupPlan.slot_label[token_slot]``).
        slot (Tensor): ``(N,)`` long slot of each token in the flat
            ``(num_groups * group_size)`` layout (``GroupPlan.token_slot``).
        slot_window (Tensor): ``(num_groups, group_size)`` long window of
            every slot, -1 for padding.
        num_groups (int): Number of groups ``G``.
        group_size (int): Group size ``g``.
    """
    stage: int
    window: int
    shift: int
    hw: Tuple[int, int]
    coords: Tensor
    window_id: Tensor
    slot: Tensor
    slot_window: Tensor
    num_groups: int
    group_size: int

    @property
    def padding_waste(self) -> float:
        """Padded slots divided by visible tokens."""
        n = self.coords.shape[0]
        return (self.num_groups * self.group_size - n) / max(n, 1)


def _stage_items(stage_plans) -> List[Tuple[Tuple[int, int], GroupPlan]]:
    """``((window, shift), GroupPlan)`` pairs of one stage's plans: a Swin
    ``{(window, shift): GroupPlan}`` dict, or a Twins ``{'lsa': GroupPlan or
    None, ...}`` dict (regular windows only)."""
    if 'lsa' in stage_plans:
        lsa = stage_plans['lsa']
        return [] if lsa is None else [((lsa.window, 0), lsa)]
    return [(key, plan) for key, plan in stage_plans.items()
            if isinstance(plan, (GroupPlan, UnitGroupPlan))]


def grouping_layouts(backbone: nn.Module, mask: Tensor,
                     img_hw: Tuple[int, int]) -> List[GroupLayout]:
    """Group layouts of every stage and block kind for one masked image.

    Token coordinates and windows are read from the plans themselves
    (``slot_rc`` and ``slot_label`` at ``token_slot``).

    Args:
        backbone (nn.Module): A Green backbone with ``make_plans`` and
            ``mask_unit`` (:class:`GreenSwinTransformer`; Twins' LSA plans
            are read too).
        mask (Tensor): ``(1, L)`` or ``(L,)`` unit mask, 1 = masked.
        img_hw (tuple[int, int]): Image size in pixels.

    Returns:
        list[GroupLayout]: Per stage, one entry per distinct
        ``(window, shift)``, in stage order.
    """
    if not hasattr(backbone, 'make_plans'):
        raise TypeError(f'{type(backbone).__name__} makes no grouping plans;'
                        ' use a Green backbone such as GreenSwinTransformer.')
    mask = mask.reshape(1, -1) if mask.dim() == 1 else mask
    if mask.shape[0] != 1:
        raise ValueError('grouping_layouts draws one image: expected a mask '
                         f'of one sample, got shape {tuple(mask.shape)}.')
    grid = unit_grid(img_hw, backbone.mask_unit)
    n_vis = int((~mask.bool()).sum())
    out = []
    for i, stage_plans in enumerate(backbone.make_plans(mask, img_hw)):
        for (window, shift), plan in _stage_items(stage_plans):
            plan = plan.to('cpu')
            # tokens per unit side at this stage, from the token count
            side = math.isqrt(plan.num_tokens // n_vis)
            g, n_groups = plan.group_size, plan.num_groups
            labels = plan.slot_label  # (G*g,) negative = padding
            slot_window = torch.where(labels >= 0, labels,
                                      torch.full_like(labels, -1))
            out.append(GroupLayout(
                stage=i, window=window, shift=shift,
                hw=(grid[0] * side, grid[1] * side),
                coords=plan.slot_rc[plan.token_slot],  # (N, 2)
                window_id=labels[plan.token_slot], slot=plan.token_slot,
                slot_window=slot_window.view(n_groups, g),
                num_groups=n_groups, group_size=g))
    return out


def window_colours(window_ids: Tensor, seed: int = 0) -> dict:
    """A distinct colour per window id (shuffled so neighbours differ).

    Args:
        window_ids (Tensor): Window ids to colour.
        seed (int): Shuffle seed. Defaults to 0.

    Returns:
        dict[int, tuple]: ``{window id: (r, g, b)}`` in [0, 1].
    """
    import matplotlib
    ids = sorted(set(int(i) for i in window_ids.tolist()) - {-1})
    rng = np.random.RandomState(seed)
    cmap = matplotlib.colormaps['hsv']
    hues = (np.arange(len(ids)) + 0.5) / max(len(ids), 1)
    rng.shuffle(hues)
    return {i: tuple(cmap(h * 0.92)[:3]) for i, h in zip(ids, hues)}


def token_image(layout: GroupLayout, colours: dict) -> np.ndarray:
    """The stage's feature map with visible tokens coloured by window.

    Args:
        layout (GroupLayout): One layout.
        colours (dict): From :func:`window_colours`.

    Returns:
        np.ndarray: ``(H_i, W_i, 4)`` RGBA; masked positions transparent.
    """
    img = np.zeros(layout.hw + (4, ), dtype=np.float32)
    rgb = np.array([colours[int(w)] for w in layout.window_id.tolist()])
    r, c = layout.coords[:, 0].numpy(), layout.coords[:, 1].numpy()
    img[r, c, :3] = rgb
    img[r, c, 3] = 0.8
    return img


def group_image(layout: GroupLayout, colours: dict) -> np.ndarray:
    """The groups as rows of slots coloured by window, padding grey.

    Args:
        layout (GroupLayout): One layout.
        colours (dict): From :func:`window_colours`.

    Returns:
        np.ndarray: ``(num_groups, group_size, 3)`` RGB.
    """
    sw = layout.slot_window.numpy()
    img = np.empty(sw.shape + (3, ), dtype=np.float32)
    img[...] = PAD_RGB
    for w, col in colours.items():
        img[sw == w] = col
    return img


def draw_grouping(layouts: List[GroupLayout],
                  out_file: str,
                  image: Optional[np.ndarray] = None,
                  title: Optional[str] = None,
                  dpi: int = 80) -> str:
    """Draw layouts, one row each: tokens by window, then groups.

    Args:
        layouts (list[GroupLayout]): From :func:`grouping_layouts`.
        out_file (str): Output PNG; must end with ``.png``. Its folder is
            created; the file is written to a temporary file and renamed.
        image (np.ndarray, optional): ``(H, W, 3)`` uint8 RGB image shown
            faintly under the tokens. Defaults to None.
        title (str, optional): Figure title. Defaults to None.
        dpi (int): Resolution. Defaults to 80.

    Returns:
        str: ``out_file``.
    """
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator
    from PIL import Image

    from ..utils_io import atomic_write
    from .reconstruction import check_png_name
    check_png_name(out_file)
    if not layouts:
        raise ValueError('No layouts to draw.')
    rows = len(layouts)
    fig, axes = plt.subplots(
        rows, 2, figsize=(9, 2.7 * rows + 0.5), squeeze=False,
        gridspec_kw=dict(width_ratios=(1, 1.7)))
    for ax_tok, ax_grp, lay in zip(axes[:, 0], axes[:, 1], layouts):
        colours = window_colours(lay.window_id)
        h, w = lay.hw
        extent = (0, w, h, 0)
        if image is not None:
            ax_tok.imshow(image, extent=extent, alpha=0.35)
        else:
            ax_tok.imshow(np.ones((1, 1, 3)), extent=extent)
        ax_tok.imshow(token_image(lay, colours), extent=extent,
                      interpolation='nearest')
        # window borders: the shifted windows start at row/col ``shift``
        for r in range(lay.shift or lay.window, h, lay.window):
            ax_tok.axhline(r, color='k', lw=0.6)
        for c in range(lay.shift or lay.window, w, lay.window):
            ax_tok.axvline(c, color='k', lw=0.6)
        ax_tok.set_xlim(0, w)
        ax_tok.set_ylim(h, 0)
        ax_tok.set_xticks([])
        ax_tok.set_yticks([])
        kind = f'shifted ({lay.shift})' if lay.shift else 'regular'
        ax_tok.set_title(
            f'stage {lay.stage + 1}, {h}x{w}, {kind} windows of {lay.window}'
            f'\n{lay.coords.shape[0]} visible tokens in {len(colours)} '
            f'window{"s" if len(colours) != 1 else ""}', fontsize=8)
        sw = lay.slot_window.numpy()
        ax_grp.imshow(group_image(lay, colours), aspect='auto',
                      interpolation='nearest',
                      extent=(0, lay.group_size, lay.num_groups, 0))
        # borders between windows inside a group, and between groups
        for gi in range(lay.num_groups):
            cut = np.nonzero(sw[gi, 1:] != sw[gi, :-1])[0] + 1
            ax_grp.vlines(cut, gi, gi + 1, colors='k', lw=0.8)
        ax_grp.hlines(np.arange(1, lay.num_groups), 0, lay.group_size,
                      colors='w', lw=1.5)
        ax_grp.xaxis.set_major_locator(MaxNLocator(integer=True))
        step = max(1, math.ceil(lay.num_groups / 10))
        ticks = np.arange(0, lay.num_groups, step)
        ax_grp.set_yticks(ticks + 0.5, labels=[str(t) for t in ticks])
        ax_grp.set_xlabel('slot', fontsize=8)
        ax_grp.set_ylabel('group', fontsize=8)
        ax_grp.tick_params(labelsize=7)
        ax_grp.set_title(
            f'{lay.num_groups} groups x {lay.group_size} slots\n'
            f'padding (grey) {100 * lay.padding_waste:.1f}% of the tokens',
            fontsize=8)
    top = 1.0
    if title:
        fig.suptitle(title, fontsize=9)
        top = 1.0 - 0.45 / fig.get_figheight()
    fig.tight_layout(rect=(0, 0, 1, top))
    buf = io.BytesIO()
    fig.savefig(buf, dpi=dpi, format='png')
    plt.close(fig)
    buf.seek(0)
    # a 256-colour palette keeps the file small (the figure has few colours)
    with Image.open(buf) as img, atomic_write(out_file) as tmp:
        img.convert('RGB').quantize(256).save(tmp, format='PNG',
                                              optimize=True)
    return out_file


__all__ = [
    'GroupLayout', 'grouping_layouts', 'window_colours', 'token_image',
    'group_image', 'draw_grouping', 'PAD_RGB'
]
