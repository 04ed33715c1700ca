"""Apply a whole AccelConfig to a pipeline or U-Net; one handle removes it all."""

from __future__ import annotations

from tuner.config import AccelConfig, method_specs
from tuner.methods.base import Handle


def apply(target, config: AccelConfig | dict) -> Handle:
    """Apply every method of `config` to `target` (a tuner pipeline, a diffusers pipeline or a U-Net),
    in the registry's order. Returns a handle whose `remove()` restores the target bit for bit.
    If one method fails, the ones already applied are removed before the error propagates."""
    if isinstance(config, dict):
        config = AccelConfig.from_dict(config)
    specs = method_specs()
    applied: list[Handle] = []
    try:
        for name in sorted(config.methods, key=lambda n: specs[n].order):
            applied.append(specs[name].apply(target, config.methods[name]))
    except BaseException:
        for h in reversed(applied):
            h.remove()
        raise
    combined = Handle("+".join(h.name for h in applied))
    for h in applied:
        combined.info.update(h.info)
        combined.on_remove(h.remove)
    return combined
