# Mask R-CNN + FPN on COCO with a GreenMIM-pretrained Swin-B (window 7),
# 1x schedule (12 epochs), 8 GPUs x 2 images. Usage:
#   mim train mmdet configs/mmdet/mask-rcnn_greenmim-swin-base-w7_fpn_1x_coco.py \
#       --cfg-options model.backbone.init_cfg.checkpoint=<pretrain .pth>
# The checkpoint may be a GreenMIM Runner checkpoint (e.g. epoch_800.pth) or
# the output of `tools/extract_backbone.py --keep-prefix`.
#
# mmdet's own _base_ files are inherited: mmengine then adds `_scope_` only
# to the outermost dicts with a `type` (model, datasets, transforms, hooks,
# ...), all of which go through a registry `build`; mmdet's dataloaders set
# no `collate_fn`, which is where `_scope_` breaks (see README "Known
# pitfalls"). tests/test_configs/test_transfer_configs.py and
# tests/test_tools/test_transfer_detection.py check that this stays true.
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    'mmdet::_base_/datasets/coco_instance.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
    '../_base_/models/swin_paper-layout.py',
]
custom_imports = dict(imports=['greenmim_mm'], allow_failed_imports=False)

# what `mim train mmpretrain configs/greenmim_swin.py` writes last
pretrained = 'work_dirs/greenmim_swin/epoch_800.pth'

model = dict(
    backbone=dict(
        _delete_=True,
        # Our subclass rather than `mmpretrain.SwinTransformer`: with no mask
        # its forward and state-dict keys are exactly mmpretrain's Swin, and
        # it lives in mmpretrain's registry (hence the `mmpretrain.` scope),
        # but its `init_weights` also checks that the Pretrained checkpoint
        # really matches the architecture instead of only logging a warning.
        type='mmpretrain.GreenSwinTransformer',
        arch='base',
        img_size=224,
        window_size=7,
        drop_path_rate=0.3,  # deeper than mmdet's Swin-T/S (0.2)
        out_indices=(0, 1, 2, 3),
        # pad maps smaller than a window (small or elongated images), as
        # mmdet's own Swin does, instead of failing an assertion
        pad_small_map=True,
        with_cp=False,
        # LayerNorm eps 1e-6 as in the paper's encoders and our pretraining
        # configs (mmpretrain's Swin: 1e-5)
        **_base_.paper_swin,
        init_cfg=dict(
            type='Pretrained', checkpoint=pretrained, prefix='backbone.')),
    neck=dict(in_channels=[128, 256, 512, 1024]))

# AdamW, no weight decay on norms, relative-position-bias tables and the
# absolute position embedding (as in mmdet's Swin Mask R-CNN configs).
optim_wrapper = dict(
    type='OptimWrapper',
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }),
    optimizer=dict(
        _delete_=True,
        type='AdamW',
        lr=0.0001,
        betas=(0.9, 0.999),
        weight_decay=0.05))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs)
param_scheduler = [
    dict(
        type='LinearLR', start_factor=0.001, by_epoch=False, begin=0,
        end=1000),
    dict(
        type='MultiStepLR',
        begin=0,
        end=max_epochs,
        by_epoch=True,
        milestones=[8, 11],
        gamma=0.1)
]
