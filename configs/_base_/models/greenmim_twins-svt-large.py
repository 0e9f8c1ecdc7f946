# GreenMIM with a Twins-SVT-L encoder and a 1-block, 512-wide decoder.
# Mask unit 32 px = the final stride (patch sizes 4, 2, 2, 2); the sr
# cells (sr_ratios 8, 4, 2, 1) coincide with mask units.
model = dict(
    type='GreenMIM',
    mask_ratio=0.75,
    backbone=dict(
        type='GreenSVT',
        arch='large',
        drop_path_rate=0.0,
        out_indices=(3, ),
        norm_after_stage=[False, False, False, True],
        sparse_conv_backend='auto'),
    neck=dict(
        type='GreenMIMDecoder',
        in_channels=1024,
        embed_dims=512,
        depth=1,
        num_heads=16,
        unit_size=32),
    head=dict(
        type='GreenMIMHead',
        norm_pix=True,
        patch_size=32,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')))
