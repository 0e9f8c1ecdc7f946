#!/usr/bin/env python
"""Draw the Group Window Attention plans of one masked image.

One row per windowed stage and block kind (regular / shifted windows):
left, the visible tokens on the stage's feature map coloured by window
(black lines are window borders); right, the groups the backbone's own
``make_plans`` formed, one bar of ``group_size`` slots per group, slots
coloured by window and padding grey.

``--out`` must end with ``.png`` (the file is a PNG) and may not be the
``--image``; its folder is created and the file is written through a
temporary file and renamed.

    python tools/visualize_grouping.py --arch tiny \
        --image data/demo/train/astronaut_0000.jpg --out docs/images/grouping.png
"""
import argparse
import sys


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    src = parser.add_mutually_exclusive_group()
    src.add_argument('--config', help='take the backbone from this config')
    src.add_argument('--arch', default='tiny',
                     help='Swin arch when no config is given '
                     '(default: %(default)s)')
    parser.add_argument('--window', type=int, default=7,
                        help='window size with --arch (default: %(default)s)')
    parser.add_argument('--img-size', type=int, default=224,
                        help='image side with --arch (default: %(default)s)')
    parser.add_argument('--image', help='image drawn under the tokens')
    parser.add_argument('--seed', type=int, default=0,
                        help='mask seed (default: %(default)s)')
    parser.add_argument('--mask-ratio', type=float, default=0.75,
                        help='mask ratio (default: %(default)s)')
    parser.add_argument('--dpi', type=int, default=80,
                        help='figure resolution (default: %(default)s)')
    parser.add_argument('--out', required=True, help='output PNG file')
    return parser.parse_args(argv)


def build_backbone(args):
    """The backbone (random weights: only its planning is used)."""
    from mmpretrain.registry import MODELS

    from greenmim_mm.visualization import input_size, load_config
    if args.config:
        cfg = load_config(args.config)
        backbone = MODELS.build(cfg.model.backbone)
        return backbone, input_size(cfg)
    from greenmim_mm.models import GreenSwinTransformer
    size = args.img_size
    return GreenSwinTransformer(arch=args.arch, img_size=size,
                                window_size=args.window), (size, size)


def load_rgb(path, hw):
    """Shorter edge to the image size, centre crop: ``(H, W, 3)`` uint8."""
    import numpy as np
    from PIL import Image
    img = Image.open(path).convert('RGB')
    scale = max(hw[0] / img.height, hw[1] / img.width)
    img = img.resize((max(hw[1], round(img.width * scale)),
                      max(hw[0], round(img.height * scale))),
                     Image.BICUBIC)
    left, top = (img.width - hw[1]) // 2, (img.height - hw[0]) // 2
    return np.asarray(img.crop((left, top, left + hw[1], top + hw[0])))


def main(argv=None):
    args = parse_args(argv)
    import greenmim_mm  # noqa: F401  registers the models
    from greenmim_mm.utils_io import refuse_same_file
    from greenmim_mm.visualization import check_png_name
    check_png_name(args.out)
    if args.image:
        refuse_same_file(args.image, args.out, what='--out')
    from greenmim_mm.models.utils import unit_grid
    from greenmim_mm.visualization import (draw_grouping, fixed_mask,
                                           grouping_layouts)
    backbone, hw = build_backbone(args)
    grid = unit_grid(hw, backbone.mask_unit)
    mask = fixed_mask(1, grid, args.mask_ratio, args.seed)
    layouts = grouping_layouts(backbone, mask, hw)
    image = load_rgb(args.image, hw) if args.image else None
    n_vis = int((~mask).sum())
    title = (f'{hw[0]}x{hw[1]} image, {n_vis} of {grid[0] * grid[1]} mask '
             f'units visible (ratio {args.mask_ratio}, seed {args.seed})')
    draw_grouping(layouts, args.out, image=image, title=title, dpi=args.dpi)
    for lay in layouts:
        print(f'stage {lay.stage + 1} {lay.hw[0]}x{lay.hw[1]} window '
              f'{lay.window} shift {lay.shift}: {lay.coords.shape[0]} tokens,'
              f' {lay.num_groups} groups x {lay.group_size}, padding '
              f'{100 * lay.padding_waste:.1f}%')
    print(f'wrote {args.out}')
    return args.out


if __name__ == '__main__':
    sys.exit(0 if main() else 1)
