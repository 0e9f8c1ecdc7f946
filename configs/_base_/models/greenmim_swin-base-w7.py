# GreenMIM with a Swin-B (window 7) encoder and a 1-block, 512-wide decoder.
model = dict(
    type='GreenMIM',
    mask_ratio=0.75,
    backbone=dict(
        type='GreenSwinTransformer',
        arch='base',
        img_size=224,
        window_size=7,
        drop_path_rate=0.0,
        out_indices=(3, )),
    neck=dict(
        type='GreenMIMDecoder',
        in_channels=128 * 2**3,
        embed_dims=512,
        depth=1,
        num_heads=16,
        unit_size=32),
    head=dict(
        type='GreenMIMHead',
        norm_pix=True,
        patch_size=32,
        loss=dict(type='PixelReconstructionLoss', criterion='L2')))
