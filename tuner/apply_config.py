"""Apply a whole AccelConfig to a pipeline or U-Net; one handle removes it all.

Every handle `apply` returns is also remembered on the U-Net it patched, so `remove(target)` undoes
whatever tuner applied there when the handle is lost. A U-Net another tool patched is refused
(tuner.methods.foreign); a `torch.compile`d one is patched behind its wrapper and its compiled graph is
rebuilt (tuner.methods.compiled)."""

from __future__ import annotations

from tuner.config import AccelConfig, method_specs
from tuner.methods.base import Handle, resolve_unet
from tuner.methods.compiled import REBUILT, is_compiled, rebuild_compiled
from tuner.methods.foreign import refuse_foreign

_HANDLES_ATTR = "_tuner_handles"  # on the patched U-Net: the handles `remove(target)` undoes


def _patched_unet(target):
    """The U-Net `apply` records its handle on (None: a target without one, e.g. a stand-in in tests)."""
    from tuner.errors import TunerError

    try:
        return resolve_unet(target)
    except TunerError:
        return None


def apply(target, config: AccelConfig | dict) -> Handle:
    """Apply every method of `config` to `target` (a tuner pipeline, a diffusers pipeline or a U-Net,
    compiled or not), in the registry's order. Returns a handle whose `remove()` restores the target bit
    for bit. If one method fails, the ones already applied are removed before the error propagates."""
    if isinstance(config, dict):
        config = AccelConfig.from_dict(config)
    unet = _patched_unet(target)
    if unet is not None:
        refuse_foreign(unet)
    specs = method_specs()
    applied: list[Handle] = []
    try:
        for name in sorted(config.methods, key=lambda n: specs[n].order):
            applied.append(specs[name].apply(target, config.methods[name]))
    except BaseException:
        for h in reversed(applied):
            h.remove()
        raise
    combined = Handle("+".join(h.name for h in applied),
                      methods={n: config.methods[n].to_dict() for n in (h.name for h in applied)})
    for h in applied:
        combined.info.update(h.info)
        combined.on_remove(h.remove)
    if is_compiled(target):
        combined.info["compiled"] = REBUILT
        rebuild_compiled()
        combined.on_remove(lambda: rebuild_compiled(warn=False))
    if unet is not None:
        _remember(unet, combined)
    return combined


def _remember(unet, handle: Handle) -> None:
    handles = unet.__dict__.setdefault(_HANDLES_ATTR, [])
    handles.append(handle)

    def forget():
        if handle in handles:
            handles.remove(handle)
        if not handles and unet.__dict__.get(_HANDLES_ATTR) is handles:
            del unet.__dict__[_HANDLES_ATTR]  # leave the U-Net exactly as it was

    handle.on_remove(forget)
    handle.target_name = type(unet).__name__


def applied_handles(target) -> list[Handle]:
    """The handles tuner's `apply` left active on `target`'s U-Net, oldest first."""
    unet = _patched_unet(target)
    return list(unet.__dict__.get(_HANDLES_ATTR, [])) if unet is not None else []


def remove(target) -> int:
    """Undo whatever tuner applied to `target` (a pipeline or U-Net), newest first; returns how many
    handles were removed (0 when nothing was applied)."""
    handles = applied_handles(target)
    for h in reversed(handles):
        h.remove()
    return len(handles)
