"""tuner: joint search of training-free diffusion U-Net accelerations.

Python API:
    from tuner import AccelConfig, apply
    handle = apply(pipe_or_unet, AccelConfig.load("best.json"))
    ...  # generate
    handle.remove()  # the model is bit-identical to before
    frame = tuner.load_trials("studies/default.toml")  # every trial as a pandas DataFrame
"""

import os as _os

__version__ = "0.2.0"

# The repository keeps search_spaces/ and evaluators/ at its top level (the project's layout); installed,
# they are tuner.search_spaces and tuner.evaluators (pyproject's package-dir). Run from a source checkout
# without installing, find them beside this package.
_root = _os.path.dirname(_os.path.dirname(_os.path.abspath(__file__)))
if not _os.path.isdir(_os.path.join(__path__[0], "search_spaces")) and all(
        _os.path.isfile(_os.path.join(_root, sub, "__init__.py")) for sub in ("search_spaces", "evaluators")):
    __path__.append(_root)


def __getattr__(name):  # lazy: `tuner --help` should not import torch/diffusers
    if name == "apply":
        from tuner.apply_config import apply

        return apply
    if name == "AccelConfig":
        from tuner.config import AccelConfig

        return AccelConfig
    if name == "load_trials":
        from tuner.study.trials import load_trials

        return load_trials
    if name == "TunerError":
        from tuner.errors import TunerError

        return TunerError
    raise AttributeError(name)
