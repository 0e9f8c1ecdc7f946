"""Build-time agreement of a GreenMIM backbone, neck and head.

A mismatch between the three otherwise surfaces at the first training step
as a raw shape error deep inside a matmul or a reshape. These pure checks
read the built modules and raise a ``ValueError`` naming both settings.

GreenMIM: `Green Hierarchical Vision Transformer for Masked Image Modeling
<https://arxiv.org/abs/2205.13515>`_.
"""
import math
from typing import List, Sequence

from torch import nn


def stage_widths(backbone: nn.Module) -> List[int]:
    """Channel width of every stage of a Swin-, Twins- or ConvNeXt-style
    backbone.

    Args:
        backbone (nn.Module): mmpretrain ``SwinTransformer`` (widths in
            ``num_features``), ``PCPVT`` / ``SVT`` (widths in the list
            ``embed_dims``) or ``ConvNeXt`` (``channels``), or a subclass.

    Returns:
        list[int]: One width per stage.

    Raises:
        TypeError: If the backbone exposes neither.
    """
    widths = getattr(backbone, 'num_features', None)
    if not isinstance(widths, Sequence):
        widths = getattr(backbone, 'embed_dims', None)
    if not isinstance(widths, Sequence):  # ConvNeXt
        widths = getattr(backbone, 'channels', None)
    if not isinstance(widths, Sequence) or not widths:
        raise TypeError(
            f'{type(backbone).__name__} exposes no per-stage widths '
            '(`num_features` as in SwinTransformer, a list `embed_dims` '
            'as in PCPVT/SVT or `channels` as in ConvNeXt); GreenMIM '
            'cannot check its neck against it.')
    return [int(w) for w in widths]


def check_greenmim_parts(backbone: nn.Module, neck: nn.Module,
                         head: nn.Module) -> None:
    """Check that backbone, neck and head of a GreenMIM agree.

    Checked: the backbone is a Green backbone (``mask_unit``); its
    ``out_indices`` include the last stage (GreenMIM feeds ``feats[-1]`` to
    the neck); ``head.patch_size`` equals the mask unit; the neck's input
    width (``decoder_embed``) equals the last stage's width and its output
    (``decoder_pred``) is one mask unit of ``head.in_channels`` pixels.
    A neck without ``decoder_embed`` / ``decoder_pred`` is not checked.

    Args:
        backbone (nn.Module): The built backbone.
        neck (nn.Module): The built neck, e.g. ``GreenMIMDecoder``.
        head (nn.Module): The built head, e.g. ``GreenMIMHead``.

    Raises:
        ValueError: Naming both disagreeing settings.
        TypeError: If the backbone is not a Green backbone.
    """
    name = type(backbone).__name__
    unit = getattr(backbone, 'mask_unit', None)
    if unit is None:
        raise TypeError(
            f'GreenMIM needs a Green backbone with a `mask_unit` and a '
            f'masked forward, got {name}.')
    widths = stage_widths(backbone)
    last = len(widths) - 1
    out_indices = [int(i) for i in backbone.out_indices]
    if last not in out_indices:
        raise ValueError(
            f'backbone.out_indices={tuple(out_indices)} must include the last '
            f'stage ({last}) of {name}: GreenMIM feeds the last stage to the '
            f'neck. Use e.g. out_indices=({last}, ).')
    patch = getattr(head, 'patch_size', None)
    if patch is not None and patch != unit:
        raise ValueError(
            f'head.patch_size={patch} differs from the backbone mask unit '
            f'({unit} px = the final stride of {name}); set '
            f'head.patch_size={unit}.')
    embed = getattr(neck, 'decoder_embed', None)
    if isinstance(embed, nn.Linear) and embed.in_features != widths[-1]:
        raise ValueError(
            f'neck.in_channels={embed.in_features} differs from the width of '
            f"the backbone's last stage ({widths[-1]}, {name} stage widths "
            f'{widths}); set neck.in_channels={widths[-1]}.')
    pred = getattr(neck, 'decoder_pred', None)
    chans = getattr(head, 'in_channels', 3)
    if isinstance(pred, nn.Linear) and pred.out_features != unit**2 * chans:
        side = math.isqrt(pred.out_features // chans)
        got = (f'neck.unit_size={side}'
               if side * side * chans == pred.out_features else
               f'neck output width {pred.out_features}')
        raise ValueError(
            f'{got} differs from the backbone mask unit ({unit} px, '
            f'{unit}**2 * {chans} channels = {unit**2 * chans} outputs); set '
            f'neck.unit_size={unit} (and neck.in_chans={chans}, as '
            'head.in_channels).')
