# Entry point: GreenMIM pretraining of Twins-SVT-L (224 px, ratio 0.75) on
# ImageNet-1k, 800 epochs. Usage:
#   mim train mmpretrain configs/greenmim_twins.py [--launcher pytorch|slurm]
_base_ = './greenmim_twins-svt-large_8xb256-amp-coslr-800e_in1k.py'
