"""Acceleration methods. Importing this package registers each one in `base.METHODS`.

One file per method (tensor math in its own `*_math.py`/`merge.py` where it is more than a few lines);
each defines a config dataclass, an `apply(target, cfg) -> Handle`, and registers both.
"""

from tuner.methods import base  # noqa: F401
from tuner.methods import timesteps  # noqa: F401
from tuner.methods import sampler_choice  # noqa: F401
from tuner.methods import quant  # noqa: F401
from tuner.methods import tome  # noqa: F401
from tuner.methods import catome  # noqa: F401
from tuner.methods import deepcache  # noqa: F401
from tuner.methods import frdiff  # noqa: F401
