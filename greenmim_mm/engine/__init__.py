from .hooks import *  # noqa: F401,F403
from . import hooks

__all__ = hooks.__all__
