# Demo: ConvNeXt-V2-T (GreenMIM, ratio 0.6) on the built-in demo photos
# (tools/make_demo_data.py -> data/demo/train), 20 epochs on a CPU: the Swin-T
# demo sibling with the ConvNeXt encoder. Usage:
#   mim train mmpretrain configs/greenmim_convnext-v2-tiny_1xb16-coslr-20e_demo.py
_base_ = './greenmim_swin-tiny-w7_1xb16-coslr-20e_demo.py'

model = dict(
    mask_ratio=0.6,
    backbone=dict(
        _delete_=True,
        type='GreenConvNeXt',
        arch='tiny',
        use_grn=True,
        layer_scale_init_value=0.,
        out_indices=(3, ),
        gap_before_final_norm=False),
    neck=dict(in_channels=768))
