# GreenMIM with a ConvNeXt-V2-T encoder (FCMAE's recipe: GRN, no layer
# scale, mask ratio 0.6) and the Swin-B sibling's 1-block, 512-wide decoder
# at the 1/32 grid, norm-pix MSE head. Mask unit 32 px = the final stride
# (stem 4, then three 2x2 downsamplings): every stem / downsampling cell
# lies inside one unit, and each 7x7 depthwise conv is a submanifold sparse
# conv over the visible tokens.
_base_ = './greenmim_swin-base-w7.py'

model = dict(
    mask_ratio=0.6,
    backbone=dict(
        _delete_=True,
        type='GreenConvNeXt',
        arch='tiny',
        use_grn=True,
        layer_scale_init_value=0.,
        drop_path_rate=0.0,
        out_indices=(3, ),
        # the masked path returns visible tokens, not pooled features
        gap_before_final_norm=False,
        sparse_conv_backend='gather'),
    neck=dict(in_channels=768))
