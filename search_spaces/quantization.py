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

Fake-quantized layers cost full float time (only W8A8 Linear layers run real int8 kernels), so this
family belongs in a study only with BitOPs as an objective (see `search_spaces.defaults`).

Table keys: `[space.quant]` enabled, optional, bits, act_bits, separate_act, group_by.
"""

from __future__ import annotations

from tuner.search_spaces.params import Condition, Family, Param, TableReader
from tuner.errors import TunerError

from tuner.methods.quant_math import BITS as ALL_BITS, FULL  # noqa: E402  (the bit-widths the method accepts)
GROUPINGS = ("block", "layer")


def layer_group(name: str, group_by: str = "block") -> str:
    """The gene a layer belongs to: its block (`down_blocks.1`, `mid_block`, `conv_in`, ...) or itself."""
    if group_by == "layer":
        return name
    parts = name.split(".")
    if parts[0] in ("down_blocks", "up_blocks") and len(parts) > 1:
        return f"{parts[0]}.{parts[1]}"
    return parts[0]


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
        r.finish()
        layers = context.fact("quant", "quant_layers")
        if not layers:
            raise TunerError("space.quant needs the U-Net's layer names (the quant method's fact quant_layers)")
        self.groups: dict[str, list[str]] = {}
        for layer in layers:
            self.groups.setdefault(layer_group(layer, group_by[0]), []).append(layer)
        self.separate = separate
        self.add(Param("quant.enabled", "categorical", choices=(True, False) if optional else (True,),
                       help="quantization on"))
        on = Condition("quant.enabled", (True,))
        for group in self.groups:
            self.add(Param(f"quant.bits.{group}", "categorical", choices=bits, condition=on,
                           help=f"weight{'' if separate else ' and activation'} bits of {group}"))
            if separate:
                self.add(Param(f"quant.act.{group}", "categorical", choices=act_bits, condition=on,
                               help=f"activation bits of {group}"))

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
        return {"quant": {"weight_bits": FULL, "act_bits": FULL, "per_layer": per_layer}}


KEYS = ("quant",)


def build(tables: dict, context) -> QuantizationFamily:
    return QuantizationFamily(tables["quant"], context)
