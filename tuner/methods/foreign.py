"""Patches that other tools left on a U-Net, refused before tuner adds its own.

Stacking two patchers on one U-Net gives images neither was checked for, and undoing one of them can
leave the other broken, so `tuner.apply` refuses a U-Net another tool patched (one line, what was found
and how to undo it). What we recognize, by the markers the tools leave:
- tomesd (`tomesd.apply_patch`): blocks whose class tomesd swapped (a `ToMeBlock` with `_parent`), or
  its hooks still listed in `_tome_info` (`remove_patch` leaves `_tome_info` behind, with no hooks);
- DeepCache (`DeepCacheSDHelper.enable`): an instance-level `forward` that is not the module's own
  (DeepCache wraps the U-Net's and its blocks' `forward`);
- diffusers hooks (`HookRegistry`, e.g. `apply_faster_cache`, `apply_first_block_cache`, group
  offloading): a `_diffusers_hook` registry holding hooks not named `tuner.*`.
tuner's own patches (hooks named `tuner.*`, torch forward hooks) are not foreign.
"""

from __future__ import annotations

import torch

from tuner.errors import TunerError

OWN_HOOK_PREFIX = "tuner."


def _foreign_forward(module: torch.nn.Module) -> bool:
    fwd = module.__dict__.get("forward")
    if fwd is None or getattr(module, "_diffusers_hook", None) is not None:
        return False  # diffusers' registry owns the instance forward: judged by its hook names
    # DeepCache's disable() puts the bound method itself back as an instance attribute: harmless
    return not (getattr(fwd, "__self__", None) is module and getattr(fwd, "__func__", None) is type(module).forward)


def _tomesd_patched(module: torch.nn.Module) -> bool:
    info = getattr(module, "_tome_info", None)
    return hasattr(type(module), "_parent") or (isinstance(info, dict) and bool(info.get("hooks")))


def _foreign_hooks(module: torch.nn.Module) -> list[str]:
    registry = getattr(module, "_diffusers_hook", None)
    names = list(getattr(registry, "hooks", {}) or {})
    return [n for n in names if not str(n).startswith(OWN_HOOK_PREFIX)]


def foreign_patch(unet: torch.nn.Module) -> str | None:
    """What another tool patched on `unet`, in a few words; None when nothing is found."""
    for name, module in unet.named_modules():
        where = name or "the U-Net"
        if _tomesd_patched(module):
            return f"tomesd's token merging (on {where}; undo with tomesd.remove_patch)"
        hooks = _foreign_hooks(module)
        if hooks:
            return f"diffusers hook(s) {', '.join(map(str, hooks))} on {where} (remove them first)"
        if _foreign_forward(module):
            return (f"a wrapped forward on {where} (DeepCache's DeepCacheSDHelper or another wrapper; "
                    "undo it with its disable() first)")
    return None


def refuse_foreign(unet: torch.nn.Module) -> None:
    found = foreign_patch(unet)
    if found is not None:
        raise TunerError(f"cannot apply tuner on a U-Net another tool patched: {found}")
