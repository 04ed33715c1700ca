"""Acceleration methods. Importing this package registers each one in `base.METHODS`.

One file per method (tensor math in its own `*_math.py`/`merge.py` where it is more than a few lines);
each defines one config dataclass whose fields are declared with `knob(...)` and registered with
`@register_method` (the loader, JSON Schema and search parameters derive from it), and one
`apply(target, cfg) -> Handle` registered with `@XConfig.register_apply`. Adding a method = one module
here, imported below, plus its tests.
"""

from tuner.methods import base  # noqa: F401
from tuner.methods import timesteps  # noqa: F401
from tuner.methods import solver  # noqa: F401
from tuner.methods import quant  # noqa: F401
from tuner.methods import tome  # noqa: F401
from tuner.methods import catome  # noqa: F401
from tuner.methods import deepcache  # noqa: F401
from tuner.methods import frdiff  # noqa: F401
from tuner.methods import flow_solver  # noqa: F401
from tuner.methods import fbcache  # noqa: F401
from tuner.methods import pab  # noqa: F401
from tuner.methods import taylorseer  # noqa: F401
from tuner.methods import magcache  # noqa: F401
from tuner.methods import dit_tome  # noqa: F401
from tuner.methods import dit_catome  # noqa: F401
