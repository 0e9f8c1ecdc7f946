"""greenmim_mm: GreenMIM masked image modelling for OpenMMLab.

Importing this package registers its models into mmpretrain's registries
(safe to import more than once).
"""
from .version import __version__
from . import models  # noqa: F401  registers models
from . import engine, visualization  # noqa: F401  registers hooks
from .checkpoint import register_safe_loader, safe_load

register_safe_loader()

__all__ = [
    '__version__', 'models', 'engine', 'visualization', 'safe_load',
    'register_safe_loader'
]
