from .grouping import *  # noqa: F401,F403
from .inference import (input_size, list_images, load_config, load_images,
                        load_model, load_state_strict,
                        build_test_pipeline)
from .reconstruction import *  # noqa: F401,F403
from . import grouping, reconstruction

__all__ = (grouping.__all__ + reconstruction.__all__ + [
    'input_size', 'list_images', 'load_config', 'load_images', 'load_model',
    'load_state_strict', 'build_test_pipeline'
])
