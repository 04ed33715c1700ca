"""tuner: joint search of training-free diffusion U-Net accelerations.

Python API:
    from tuner import AccelConfig, apply
    handle = apply(pipe_or_unet, AccelConfig.load("best.json"))
    ...  # generate
    handle.remove()  # the model is bit-identical to before
"""

__version__ = "0.1.0"


def __getattr__(name):  # lazy: `tuner --help` should not import torch/diffusers
    if name == "apply":
        from tuner.apply import apply

        return apply
    if name == "AccelConfig":
        from tuner.config import AccelConfig

        return AccelConfig
    if name == "TunerError":
        from tuner.errors import TunerError

        return TunerError
    raise AttributeError(name)
