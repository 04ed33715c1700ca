"""tuner: joint search of training-free diffusion U-Net accelerations.

Python API:
    from tuner import AccelConfig, apply
    handle = apply(pipe_or_unet, AccelConfig.load("best.json"))
    ...  # generate
    handle.remove()  # the model is bit-identical to before (or tuner.remove(pipe) without the handle)
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


# The public API (README, "Python API"): everything else is internal and may change.
_PUBLIC = {
    "apply": ("tuner.apply_config", "apply"),  # apply(pipe_or_unet, config) -> Handle
    "remove": ("tuner.apply_config", "remove"),  # remove(pipe_or_unet): undo whatever tuner applied
    "applied_handles": ("tuner.apply_config", "applied_handles"),  # the handles active on a model
    "AccelConfig": ("tuner.config", "AccelConfig"),
    "Handle": ("tuner.methods.base", "Handle"),
    "TunerError": ("tuner.errors", "TunerError"),
    "load_trials": ("tuner.study.trials", "load_trials"),  # load_trials(study_toml) -> pandas.DataFrame
}
__all__ = ["__version__", *_PUBLIC]


def __getattr__(name):  # lazy: `tuner --help` should not import torch/diffusers
    if name in _PUBLIC:
        import importlib

        module, attr = _PUBLIC[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'tuner' has no attribute {name!r}")


def __dir__():
    return sorted({*globals(), *_PUBLIC})
