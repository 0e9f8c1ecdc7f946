# Fine-tuning of the GreenMIM Swin-B window-14 model. At 224 px stage 3
# (14x14) is exactly one window and stage 4 (7x7) is smaller than it, which
# mmpretrain's dense Swin only accepts with `pad_small_map=True`. It is set on
# the last stage only, so stage 3 keeps the unshifted single window that the
# pretraining's masked path used (`pad_small_map=True` there would shift it).
_base_ = './greenmim_swin-base-w7_8xb256-amp-coslr-100e_in1k.py'

# what `mim train mmpretrain configs/greenmim_swin-base-w14_...in1k.py` writes
pretrained = ('work_dirs/greenmim_swin-base-w14_8xb256-amp-coslr-800e_in1k/'
              'epoch_800.pth')

model = dict(
    backbone=dict(
        window_size=14,
        stage_cfgs=[dict(), dict(), dict(),
                    dict(pad_small_map=True)],
        init_cfg=dict(checkpoint=pretrained)))
