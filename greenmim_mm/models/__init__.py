from .backbones import *  # noqa: F401,F403
from .heads import *  # noqa: F401,F403
from .necks import *  # noqa: F401,F403
from .selfsup import *  # noqa: F401,F403
from .utils import *  # noqa: F401,F403
from . import backbones, heads, necks, selfsup, utils

__all__ = (backbones.__all__ + heads.__all__ + necks.__all__ +
           selfsup.__all__ + utils.__all__)
