"""Per-layer quantization bits, grouped so the space stays small.

Layers (the model fact `quant_layers`, measured by `QuantConfig.prepare`) are grouped per U-Net
block by default: `conv_in`, `time_embedding`, each `down_blocks.<i>`, `mid_block`, each `up_blocks.<i>`,
`conv_out` — the first and last layers get their own bits, as TMPQ-DM and most PTQ work keep them apart.
`group_by = "layer"` gives every layer its own gene instead.

Parameters
- `quant.enabled` ∈ {true, false} (only when the table is `optional`, the default).
- `quant.bits.<group>` ∈ bits: weight bits of the group, and also its activation bits unless
  `separate_act = true`, which adds `quant.act.<group>` ∈ act_bits.
A group at 32 bits is left alone; all groups at 32 emit no `quant` method.

Sensitivity (the fact `quant_sensitivity`, measured once per study by `QuantConfig.prepare`: the U-Net
output error when one layer alone drops to b bits) guides the search: genes are ordered from the most to the
least sensitive group, groups the user lists in `keep` and groups holding a layer whose sensitivity at the lowest
searched bits exceeds `max_sensitivity` search only high precision (bits >= 16 when searched, else >= 8), and the
warm start measures uniform W8A8 and greedy mixed configs (`quant_sensitivity.greedy_bits`) at average
weight bits 6 and 5 with 8-bit activations. Activation ranges follow the trial's TMPQ grouping
(`timesteps.groups`) when it has one, else the method's default grouping.

Fake-quantized layers cost full float time (only W8A8 Linear layers run real int8 kernels), so this
family belongs in a study only with BitOPs as an objective (see `search_spaces.defaults`).

Table keys: `[space.quant]` enabled, optional, bits, act_bits, separate_act, group_by, keep, max_sensitivity.
"""

from __future__ import annotations

from tuner.search_spaces.params import Condition, Family, Param, TableReader
from tuner.errors import TunerError

from tuner.methods.quant_math import BITS as ALL_BITS, FULL  # noqa: E402  (the bit-widths the method accepts)
from tuner.methods.quant_sensitivity import greedy_bits, group_sensitivity
GROUPINGS = ("block", "layer")
DEFAULT_MAX_SENSITIVITY = 1e-3  # relative U-Net output error of one layer at the lowest searched bits
SEED_AVERAGE_BITS = (6.0, 5.0)  # greedy mixed configs the warm start measures


def layer_group(name: str, group_by: str = "block") -> str:
    """The gene a layer belongs to: its block (`down_blocks.1`, `mid_block`, `conv_in`, ...) or itself."""
    if group_by == "layer":
        return name
    parts = name.split(".")
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


def _high(bits) -> tuple:
    """High precision among `bits`: 16 or more when searched, else 8 or more, else all of them."""
    return tuple(b for b in bits if b >= 16) or tuple(b for b in bits if b >= 8) or tuple(bits)


class QuantizationFamily(Family):
    def __init__(self, table, context):
        super().__init__()
        r = TableReader("quant", table)
        self.enabled = r.flag("enabled", True)
        if not self.enabled:
            r.rest.clear()
            return
        optional = r.flag("optional", True)
        bits = r.choices("bits", [4, 6, 8, 32], ALL_BITS)
        separate = r.flag("separate_act", False)
        act_bits = r.choices("act_bits", list(bits), ALL_BITS) if separate else ()
        group_by = r.choices("group_by", ["block"], GROUPINGS)
        if len(group_by) != 1:
            raise TunerError("space.quant.group_by must be one of 'block', 'layer'")
        keep = r.rest.pop("keep", [])
        if not isinstance(keep, list) or not all(isinstance(k, str) for k in keep):
            raise TunerError("space.quant.keep must be a list of layer or group names")
        bound = r.rest.pop("max_sensitivity", DEFAULT_MAX_SENSITIVITY)
        if isinstance(bound, bool) or not isinstance(bound, (int, float)) or bound <= 0:
            raise TunerError(f"space.quant.max_sensitivity must be a positive number, got {bound!r}")
        r.finish()
        layers = context.fact("quant", "quant_layers")
        if not layers:
            raise TunerError("space.quant needs the U-Net's layer names (the quant method's fact quant_layers)")
        groups: dict[str, list[str]] = {}
        for layer in layers:
            groups.setdefault(layer_group(layer, group_by[0]), []).append(layer)
        self.sensitivity = context.fact("quant", "quant_sensitivity") or {}
        self.params_of = context.fact("quant", "quant_layer_params") or {}
        low = min(bits)
        order = sorted(groups, key=lambda g: -group_sensitivity(self.sensitivity, groups[g], low))
        self.groups = {g: groups[g] for g in order}  # genes from the most to the least sensitive group
        self.kept = self._kept(keep, bound, low)
        self.separate, self.bits, self.act_bits = separate, tuple(bits), tuple(act_bits)
        self.add(Param("quant.enabled", "categorical", choices=(True, False) if optional else (True,),
                       help="quantization on"))
        on = Condition("quant.enabled", (True,))
        for group in self.groups:
            kept = group in self.kept
            self.add(Param(f"quant.bits.{group}", "categorical", choices=_high(bits) if kept else bits, condition=on,
                           help=f"weight{'' if separate else ' and activation'} bits of {group}"))
            if separate:
                self.add(Param(f"quant.act.{group}", "categorical", choices=_high(act_bits) if kept else act_bits,
                               condition=on, help=f"activation bits of {group}"))

    def _kept(self, keep: list, bound: float, low: int) -> set[str]:
        """Groups held at high precision: named in `keep` (a group or one of its layers) or holding a layer
        whose own sensitivity at the lowest searched bits exceeds the bound."""
        out = set()
        for name in keep:
            hits = [g for g, layers in self.groups.items() if name == g or name in layers]
            if not hits:
                raise TunerError(f"space.quant.keep: '{name}' is not a layer or group of this U-Net")
            out.update(hits)
        return out | {g for g, layers in self.groups.items()
                      if any(group_sensitivity(self.sensitivity, [layer], low) > bound for layer in layers)}

    def seeds(self) -> list[dict]:
        """Uniform W8A8, then greedy sensitivity-guided mixed bits at average weight bits 6 and 5 (A8)."""
        if not self.enabled or 8 not in self.bits or (self.separate and 8 not in self.act_bits):
            return []
        high = _high(self.bits)[0]
        uniform = {"quant.enabled": True, **{f"quant.bits.{g}": high if g in self.kept else 8 for g in self.groups}}
        if self.separate:
            uniform.update({f"quant.act.{g}": _high(self.act_bits)[0] if g in self.kept else 8 for g in self.groups})
        out = [uniform]
        if not self.separate:
            return out  # a lower weight bit would also be a lower activation bit
        for target in SEED_AVERAGE_BITS:
            wanted = greedy_bits(self.groups, self.sensitivity, self.params_of, self.bits, target,
                                 fixed={g: high for g in self.kept})
            out.append({**uniform, **{f"quant.bits.{g}": b for g, b in wanted.items()}})
        return out

    def neutral(self) -> dict:
        return {"quant.enabled": False} if self.enabled else {}

    def decode(self, values: dict, num_steps: int) -> dict[str, dict]:
        if not self.enabled or not self.get(values, "quant.enabled"):
            return {}
        per_layer = {}
        for group, layers in self.groups.items():
            w = int(self.get(values, f"quant.bits.{group}"))
            a = int(self.get(values, f"quant.act.{group}")) if self.separate else w
            if (w, a) != (FULL, FULL):
                per_layer.update({layer: {"w": w, "a": a} for layer in layers})
        if not per_layer:
            return {}
        out = {"weight_bits": FULL, "act_bits": FULL, "per_layer": per_layer}
        if values.get("timesteps.schedule") == "tmpq" and values.get("timesteps.groups"):
            out["time_groups"] = int(values["timesteps.groups"])  # ranges per the trial's own TMPQ groups
        return {"quant": out}


KEYS = ("quant",)


def build(tables: dict, context) -> QuantizationFamily:
    return QuantizationFamily(tables["quant"], context)
