"""Per-layer weight/activation quantization of the U-Net's Conv2d and Linear layers (TMPQ-DM style).

- Bits per layer in {4,5,6,7,8,16,32} for weights (w) and activations (a, the layer's input); 32 = off.
  Defaults `weight_bits`/`act_bits` apply to every layer, `per_layer` overrides single layers (e.g. give
  conv_in / conv_out their own bits).
- Ranges are calibrated ONCE per U-Net (`calibrate(pipe, ...)`, or `calibrate_with(unet, run)` for any
  U-Net) on the baseline trajectory and attached to the U-Net; every candidate bit assignment reuses
  them, so evaluating a candidate never re-calibrates. A tuner pipeline without a calibration is
  calibrated on first apply with the default calibration set. Clipping ranges: 'max' (absmax, one range
  for every bit-width) or 'mse' (default: below 8 bits, per bit-width, the fraction of the absmax with the
  least squared error on the calibration statistics; at 8 bits and above the absmax), derived once per
  layer, bit-width and timestep group and cached, like TMPQ-DM's one pre-calibrated quantizer per bit-width.
- Timestep-aware activation ranges (Q-Diffusion, TMPQ-DM): calibration keeps each layer's input statistics
  per timestep of the whole baseline trajectory (every step of it, so the samples are spread over it), and
  a layer's input range is taken per TMPQ-DM quadratic timestep group (`time_groups`, default 16; the
  search uses the trial's own `timesteps.groups` when it has one). At run time the U-Net's step context
  tells which group the current call is in. Measured on the proxy (A8 on every layer, 32 images): one
  range 38.2 dB PSNR, 4 groups 42.3, 16 groups 44.2.
- Split shortcut quantization (Q-Diffusion): the 1x1 shortcut of an up-block resnet reads `cat([h, skip])`,
  two halves with different ranges; each half gets its own (a per-channel range vector). Where the skip
  half starts is read from the up block's `res_hidden_states_tuple` during calibration (`splits`).
- Modules stay the same nn.Conv2d / nn.Linear objects under the same names (cost counting relies on
  it): weights are swapped for fake-quantized copies and restored on remove, activations are
  fake-quantized by a forward pre-hook.
- Real kernels: a Linear layer at exactly W8A8 with `real_kernels=True` runs int8 × int8 → int32
  (`torch._int_mm`); all other quantized layers are simulated in float. The handle's info lists which
  is which (`real_kernel_layers`, `simulated_layers`); simulated layers cost full float time, so their
  wall-clock is never a speedup. `layer_bits` feeds BitOPs (MACs × b_w × b_a).
- `kernels = "torchao"` routes the Linear layers torchao has a kernel for to it instead: W8A8 to
  `Int8DynamicActivationInt8WeightConfig` (per-token dynamic activation scales, not our calibrated range)
  and W8/A32 to `Int8WeightOnlyConfig`; the rest stays simulated. On this CPU neither lowers latency
  (BENCHMARKS.md, "Real low-bit kernels"), so the default stays "tuner"; on CUDA torchao also has int4
  weight-only and float8 kernels, not wired here.
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
from torch import nn

from tuner.errors import TunerError
from tuner.methods.base import Handle, MethodConfig, register_method
from tuner.methods.knobs import knob
from tuner.step_context import get_step_context
from tuner.methods.quant_math import (BITS, FULL, Int8LinearWeights, act_scale, fake_quant_activation, fake_quant_weight,
                                      int8_available, int8_linear, mse_clip, mse_clip_per_channel, weight_absmax)

# Per-U-Net facts kept beside the model, not on it, so remove() leaves no attribute behind
CALIBRATIONS: "weakref.WeakKeyDictionary[nn.Module, QuantCalibration]" = weakref.WeakKeyDictionary()
ACTIVE: "weakref.WeakSet[nn.Module]" = weakref.WeakSet()  # U-Nets quantized right now
DEFAULT_CALIBRATION_IMAGES = 10  # one image per digit class, seeds apart from every image set
DEFAULT_CALIBRATION_SEED = 900_000
DEFAULT_CALIBRATION_STEPS = None  # None: the pipeline's default step count (tests shorten it)
SAMPLES_PER_CALL = 1024  # input values kept per layer and U-Net call for the MSE range search
CLIP_METHODS = ("mse", "max")
DEFAULT_TIME_GROUPS = 16  # TMPQ-DM quadratic timestep groups with their own activation ranges
KERNEL_LIBRARIES = ("tuner", "torchao")

calibration_runs = 0  # how many calibrations ran in this process (tests check it stays at one)


def quantizable_layers(unet: nn.Module) -> list[str]:
    """Names of the U-Net's Conv2d and Linear layers, in module order."""
    return [name for name, m in unet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


# --- config --------------------------------------------------------------------------------------
def _per_layer(v) -> dict:
    if not isinstance(v, dict):
        raise ValueError("per_layer must be an object {layer name: {\"w\": bits, \"a\": bits}}")
    for name, spec in v.items():
        if not isinstance(spec, dict):
            raise ValueError(f"per_layer['{name}'] must be an object with keys w and/or a")
        unknown = sorted(set(spec) - {"w", "a"})
        if unknown:
            raise ValueError(f"per_layer['{name}']: unknown key(s) {', '.join(unknown)} (use w, a)")
        for key, b in spec.items():
            if isinstance(b, bool) or b not in BITS:
                raise ValueError(f"per_layer['{name}'].{key}={b!r} is not a supported bit-width "
                                 f"({', '.join(map(str, BITS))})")
    return {name: {key: int(b) for key, b in spec.items()} for name, spec in v.items()}


PER_LAYER_SCHEMA = {"type": "object", "additionalProperties": {
    "type": "object", "additionalProperties": False,
    "properties": {"w": {"enum": list(BITS)}, "a": {"enum": list(BITS)}}}}


@register_method("quant", order=20, default_space="bitops")  # fake quantization only pays in BitOPs
@dataclass
class QuantConfig(MethodConfig):
    """Per-layer weight/activation quantization: fake-quantized (BitOPs), real int8 kernels where they fit."""

    weight_bits: int = knob(FULL, choices=BITS, help="default weight bits of every Conv2d/Linear layer")
    act_bits: int = knob(FULL, choices=BITS, help="default activation bits")
    per_layer: dict = knob({}, kind="custom", schema=PER_LAYER_SCHEMA, parse=_per_layer,
                           help="{layer name: {w: bits, a: bits}} overriding the defaults")
    real_kernels: bool = knob(True, help="run W8A8 Linear layers on real int8 kernels where available")
    kernels: str = knob("tuner", choices=KERNEL_LIBRARIES, search=("tuner",),
                        help="tuner = our int8 W8A8 Linear path; torchao = torchao's int8 configs (see the module)")
    time_groups: int = knob(DEFAULT_TIME_GROUPS, low=1, high=1000,
                            help="activation ranges per TMPQ-DM timestep group (1 = one range for all timesteps)")

    denoisers = ("unet", "dit")  # a DiT's linear layers quantize like a U-Net's

    @classmethod
    def prepare(cls, study) -> dict:
        """Calibrate once on the model's default trajectory (as evaluate/apply do on first use), so an
        exported config quantizes exactly as in its trial; then measure each layer's sensitivity once per
        study (stored with the study as `quant_sensitivity`, reused on resume and by other processes)."""
        calib = CALIBRATIONS.get(study.pipe.unet)
        if calib is None or not calib.default:  # a process calibrates once, whatever it builds
            study.log("quantization: calibrating activation ranges")
            calibrate(study.pipe)
        table = study.spec.space.get("quant", {}) if isinstance(study.spec.space, dict) else {}
        bits = table.get("bits", (4, 6, 8)) if isinstance(table, dict) else (4, 6, 8)

        def measure() -> dict:
            study.log("quantization: measuring per-layer sensitivity")
            low = [b for b in bits if b in BITS and b <= 8]  # above 8 bits a layer is as good as float
            return measure_sensitivity(study.pipe, low, study.spec.image_set.steps) if low else {}

        facts = cls.layer_facts(study.pipe.unet)
        facts["quant_sensitivity"] = study.remember("quant_sensitivity", measure)
        return facts

    @classmethod
    def layer_facts(cls, unet: nn.Module) -> dict:
        modules = dict(unet.named_modules())
        names = quantizable_layers(unet)
        return {"quant_layers": names, "quant_layer_params": {n: modules[n].weight.numel() for n in names}}

    @classmethod
    def placeholder_facts(cls, steps: int) -> dict:
        from tuner.proxy.model import build_unet

        return {**cls.layer_facts(build_unet()), "quant_sensitivity": {}}

    def layer_bits(self, names: Sequence[str]) -> dict[str, tuple[int, int]]:
        """(w, a) for every layer in `names`; a per_layer name that is not one of them is an error."""
        known = set(names)
        for name in self.per_layer:
            if name not in known:
                raise TunerError(f"method 'quant': per_layer names unknown layer '{name}' "
                                 f"(not a Conv2d/Linear of this U-Net)")
        out = {}
        for name in names:
            spec = self.per_layer.get(name, {})
            out[name] = (spec.get("w", self.weight_bits), spec.get("a", self.act_bits))
        return out


def measure_sensitivity(pipe, bits: Sequence[int], steps: int) -> dict[str, dict[str, float]]:
    """Each layer's sensitivity at each of `bits` (weights; inputs at 8 bits): quant_sensitivity's measure
    with this method's own apply, on images apart from the calibration images."""
    import tuner.methods.quant_sensitivity as qs

    def one(layer: str, w: int, a: int) -> Handle:
        return apply(pipe, QuantConfig(per_layer={layer: {"w": w, "a": a}}))

    return qs.layer_sensitivity(pipe, quantizable_layers(pipe.unet), bits, steps, DEFAULT_CALIBRATION_SEED + 500, one)


# --- calibration ---------------------------------------------------------------------------------
class QuantCalibration:
    """Statistics of one U-Net measured once: per-output-channel weight absmax and, per layer input and
    per calibration timestep, the absmax and a sample of the values (both halves apart for an up-block
    shortcut that reads a concatenated skip connection, see `splits`). Clipping ranges per (layer,
    bit-width, timestep group) are derived from them on first use and cached, so no candidate ever
    re-calibrates and every bit-width shares the same statistics."""

    def __init__(self, weight_absmax: dict[str, torch.Tensor], act_stats: dict[str, dict], source: str,
                 method: str = "mse", splits: dict[str, tuple[int, int]] | None = None):
        self.weight_absmax = weight_absmax
        self.act_stats = act_stats  # {layer: {t: [(absmax, samples) per part]}}; empty without data
        self.splits = dict(splits or {})  # {layer: (channel where the skip half starts, channels)}
        self.act_absmax = {n: torch.stack([p[0] for parts in st.values() for p in parts]).amax()
                           for n, st in act_stats.items()}
        self.act_samples = {n: torch.cat([p[1] for parts in st.values() for p in parts]) for n, st in act_stats.items()}
        self.timesteps = sorted({t for st in act_stats.values() for t in st})
        self.source = source
        self.method = method
        self.default = False  # the model's default calibration (calibrate() with no overrides)
        self._weight_clip: dict[tuple[str, int], torch.Tensor] = {}
        self._act_clip: dict[tuple, torch.Tensor] = {}

    def weight_range(self, name: str, weight: torch.Tensor, bits: int) -> torch.Tensor:
        if self.method == "max":
            return self.weight_absmax[name]
        key = (name, bits)
        if key not in self._weight_clip:
            self._weight_clip[key] = mse_clip_per_channel(weight, self.weight_absmax[name], bits)
        return self._weight_clip[key]

    def act_range(self, name: str, bits: int, timesteps: tuple[int, ...] | None = None) -> torch.Tensor:
        """The input range of `name` at `bits` over the calibration timesteps given (None: all of them): a
        scalar, or per input channel for a split shortcut."""
        if self.method == "max" and timesteps is None and name not in self.splits:
            return self.act_absmax[name]
        key = (name, bits, timesteps)
        if key not in self._act_clip:
            self._act_clip[key] = self._derive_act_range(name, bits, timesteps)
        return self._act_clip[key]

    def _derive_act_range(self, name: str, bits: int, timesteps) -> torch.Tensor:
        stats = self.act_stats[name]
        ts = [t for t in (timesteps or ()) if t in stats] or list(stats)
        # At 8 bits and above the rounding error is small and clipping the rare large inputs costs more
        # (measured: A8 on every layer, 16 groups: 44.2 dB PSNR with absmax ranges, 37.3 dB MSE-clipped)
        plain = self.method == "max" or bits >= 8
        ranges = []
        for part in range(len(stats[ts[0]])):
            amax = torch.stack([stats[t][part][0] for t in ts]).amax().cpu()
            ranges.append(amax if plain else
                          mse_clip(torch.cat([stats[t][part][1] for t in ts]), amax, bits))
        if len(ranges) == 1:
            return ranges[0]
        start, channels = self.splits[name]
        return torch.cat([ranges[0].expand(start), ranges[1].expand(channels - start)])

    def time_groups(self, groups: int) -> tuple[list[int], list[tuple[int, ...]]]:
        """TMPQ-DM's G quadratic groups of the training timesteps (edges) and, per group, the calibration
        timesteps inside it (the nearest one to the group's middle when none is)."""
        from tuner.methods.timesteps import NUM_TRAIN_TIMESTEPS, tmpq_group_edges

        if groups <= 1 or not self.timesteps:
            return [0, NUM_TRAIN_TIMESTEPS], [None]
        edges = tmpq_group_edges(NUM_TRAIN_TIMESTEPS, groups)
        members = []
        for lo, hi in zip(edges[:-1], edges[1:]):
            inside = tuple(t for t in self.timesteps if lo <= t < hi)
            members.append(inside or (min(self.timesteps, key=lambda t: abs(t - (lo + hi) / 2)),))
        return edges, members


class _Clock:
    """The timestep of the U-Net call being run, from the U-Net's step context (kept attached while in use)."""

    def __init__(self, unet: nn.Module):
        self.context = get_step_context(unet)
        self.context.register(self)

    def reset_state(self) -> None:
        pass

    def now(self) -> int:
        t = self.context.last_t
        return int(round(t)) if t is not None else 0

    def close(self) -> None:
        self.context.unregister(self)


class _RangeRecorder:
    """Forward pre-hook: per timestep, the max |input| of one layer and a random sample of its input values
    (each half apart when the layer's input concatenates a skip connection)."""

    def __init__(self, seed: int, clock: _Clock, split: Callable[[], tuple[int, int] | None]):
        self.stats: dict[int, list[list]] = {}
        self.gen = torch.Generator().manual_seed(seed)
        self.clock = clock
        self.split = split

    def __call__(self, module, args):
        x = args[0].detach()
        s = self.split()
        parts = [x] if s is None else [x[:, :s[0]], x[:, s[0]:]]
        entry = self.stats.setdefault(self.clock.now(), [[None, []] for _ in parts])
        for slot, xp in zip(entry, parts):
            m = xp.abs().amax().float()
            slot[0] = m if slot[0] is None else torch.maximum(slot[0], m)
            flat = xp.flatten()
            if flat.numel() > SAMPLES_PER_CALL:
                idx = torch.randint(0, flat.numel(), (SAMPLES_PER_CALL,), generator=self.gen)
                flat = flat[idx.to(flat.device)]
            slot[1].append(flat.float().cpu())

    def result(self) -> dict[int, list[tuple[torch.Tensor, torch.Tensor]]]:
        return {t: [(m, torch.cat(samples)) for m, samples in entry] for t, entry in self.stats.items()}


def _skip_concat_splits(unet: nn.Module, found: dict[str, tuple[int, int]]) -> list:
    """Pre-hooks on the up blocks that note, for each resnet shortcut reading `cat([h, skip])`, where the
    skip half starts (Q-Diffusion's split shortcut quantization). Returns the hook handles."""
    handles = []
    for i, block in enumerate(getattr(unet, "up_blocks", [])):
        resnets = getattr(block, "resnets", None)
        if resnets is None:
            continue

        def note(module, args, kwargs, i=i, resnets=resnets):
            skips = kwargs.get("res_hidden_states_tuple", args[1] if len(args) > 1 else None)
            for j, resnet in enumerate(resnets):
                conv = getattr(resnet, "conv_shortcut", None)
                if skips is None or j >= len(skips) or not isinstance(conv, nn.Conv2d):
                    continue
                channels, skip = conv.in_channels, skips[-1 - j].shape[1]
                if 0 < skip < channels:
                    found[f"up_blocks.{i}.resnets.{j}.conv_shortcut"] = (channels - skip, channels)

        handles.append(block.register_forward_pre_hook(note, with_kwargs=True))
    return handles


def calibrate_with(unet: nn.Module, run: Callable[[], object] | None, source: str = "custom",
                   method: str = "mse") -> QuantCalibration:
    """Measure ranges while `run()` drives `unet` (None: weight ranges only) and attach them to it."""
    global calibration_runs
    if method not in CLIP_METHODS:
        raise TunerError(f"method 'quant': unknown clipping method '{method}' ({', '.join(CLIP_METHODS)})")
    if unet in ACTIVE:
        raise TunerError("method 'quant': cannot calibrate a U-Net that is currently quantized")
    layers = dict((n, m) for n, m in unet.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    splits: dict[str, tuple[int, int]] = {}
    recorders, handles, clock = {}, [], None
    if run is not None:
        clock = _Clock(unet)
        recorders = {n: _RangeRecorder(i, clock, lambda n=n: splits.get(n)) for i, n in enumerate(layers)}
        handles = _skip_concat_splits(unet, splits) + [layers[n].register_forward_pre_hook(recorders[n]) for n in layers]
    try:
        if run is not None:
            with torch.no_grad():
                run()
    finally:
        for h in handles:
            h.remove()
        if clock is not None:
            clock.close()
    calib = QuantCalibration(
        weight_absmax={n: weight_absmax(m.weight) for n, m in layers.items()},
        act_stats={n: r.result() for n, r in recorders.items() if r.stats},
        source=source, method=method, splits=splits)
    CALIBRATIONS[unet] = calib
    calibration_runs += 1
    return calib


def calibrate(pipe, classes: Sequence[int] | None = None, seeds: Sequence[int] | None = None,
              steps: int | None = None, method: str = "mse") -> QuantCalibration:
    """Calibrate a tuner pipeline's U-Net on its baseline trajectory: the default step count and the
    baseline solver, whatever the pipeline currently has set (per-step U-Net methods must not be applied meanwhile)."""
    default = classes is None and seeds is None and steps is None and method == "mse"
    calib = _calibrate_pipe(pipe, classes, seeds, steps, method)
    calib.default = default
    return calib


def _calibrate_pipe(pipe, classes, seeds, steps, method) -> QuantCalibration:
    from tuner.pipeline import DEFAULT_STEPS

    n = DEFAULT_CALIBRATION_IMAGES
    if getattr(pipe, "kind", "proxy") != "proxy":  # a user model (tuner.models): the shipped prompts, its scheduler
        from tuner.models.prompts import read_prompts

        prompts = read_prompts(None)
        conditions = list(classes) if classes is not None else [prompts[i % len(prompts)] for i in range(n)]
        seeds = list(seeds) if seeds is not None else [DEFAULT_CALIBRATION_SEED + i for i in range(len(conditions))]
        steps = steps or DEFAULT_CALIBRATION_STEPS or DEFAULT_STEPS
        return calibrate_with(pipe.unet, lambda: pipe(conditions, seeds, num_inference_steps=steps),
                              source=f"baseline trajectory, {len(seeds)} prompts x {steps} steps", method=method)
    classes = list(classes) if classes is not None else [i % 10 for i in range(n)]
    seeds = list(seeds) if seeds is not None else [DEFAULT_CALIBRATION_SEED + i for i in range(len(classes))]
    steps = steps or DEFAULT_CALIBRATION_STEPS or DEFAULT_STEPS
    saved = (pipe.timesteps_override, pipe.steps_override, pipe.solver)
    pipe.timesteps_override, pipe.steps_override, pipe.solver = None, None, pipe.baseline_solver
    try:
        return calibrate_with(pipe.unet, lambda: pipe(classes, seeds, num_inference_steps=steps),
                              source=f"baseline trajectory, {len(seeds)} images x {steps} steps", method=method)
    finally:
        pipe.timesteps_override, pipe.steps_override, pipe.solver = saved


def get_calibration(target, unet: nn.Module, need_activations: bool) -> QuantCalibration:
    from tuner.pipeline import ProxyPipeline

    calib = CALIBRATIONS.get(unet)
    if calib is not None and (calib.act_absmax or not need_activations):
        return calib
    if isinstance(target, ProxyPipeline):
        return calibrate(target)
    if not need_activations:
        return calibrate_with(unet, None, source="weights only")
    raise TunerError("method 'quant': activation bits below 32 need calibrated ranges; call "
                     "tuner.methods.quant.calibrate_with(unet, run) once before applying")


# --- hooks ---------------------------------------------------------------------------------------
class _GroupOf:
    """Which timestep group the U-Net call being run is in (one group: always 0)."""

    def __init__(self, unet: nn.Module, edges: Sequence[int]):
        self.edges = list(edges)
        self.clock = _Clock(unet) if len(self.edges) > 2 else None

    def __call__(self) -> int:
        if self.clock is None:
            return 0
        return min(max(bisect.bisect_right(self.edges, self.clock.now()) - 1, 0), len(self.edges) - 2)

    def close(self) -> None:
        if self.clock is not None:
            self.clock.close()


def _broadcast(r: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-channel range (split shortcut) against an NCHW input; a scalar range as it is."""
    return r.view(1, -1, *([1] * (x.dim() - 2))) if r.dim() == 1 and x.dim() > 2 else r


class ActivationQuantHook:
    """Forward pre-hook: fake-quantizes a layer's input with the calibrated range of the current timestep
    group (shared by every candidate at these bits). Stateless."""

    def __init__(self, ranges: Sequence[torch.Tensor], bits: int, group_of: Callable[[], int]):
        self.ranges = list(ranges)
        self.bits = bits
        self.group_of = group_of

    def __call__(self, module, args):
        x = args[0]
        r = self.ranges[self.group_of()] if len(self.ranges) > 1 else self.ranges[0]
        return (fake_quant_activation(x, _broadcast(r, x), self.bits), *args[1:])


def _int8_kernel_fits(m: nn.Module, device: torch.device) -> bool:
    if not isinstance(m, nn.Linear) or not int8_available(device):
        return False
    # cuBLAS int8 GEMM wants both inner and output sizes in multiples of 8
    return device.type == "cpu" or (m.in_features % 8 == 0 and m.out_features % 8 == 0)


def _install_int8_linear(m: nn.Linear, clip_w: torch.Tensor, clip_a: Sequence[torch.Tensor],
                         group_of: Callable[[], int]) -> Callable[[], None]:
    packed = Int8LinearWeights(m.weight, clip_w, clip_a[0])
    a_scales = [act_scale(c.to(m.weight), 8).float() for c in clip_a]
    had_own = "forward" in m.__dict__
    previous = m.__dict__.get("forward")

    def forward(x):
        return int8_linear(x, packed, m.bias, a_scales[group_of()] if len(a_scales) > 1 else None)

    m.forward = forward  # an instance attribute: still an nn.Linear, its hooks still run

    def undo():
        if had_own:
            m.forward = previous
        else:
            del m.forward

    return undo


def _torchao_config(m: nn.Module, wb: int, ab: int):
    """torchao's config for this layer and bit pair, or None where it has no kernel we use."""
    if not isinstance(m, nn.Linear) or wb != 8 or ab not in (8, FULL):
        return None
    try:
        from torchao.quantization import Int8DynamicActivationInt8WeightConfig, Int8WeightOnlyConfig
    except ImportError:
        raise TunerError("method 'quant': kernels='torchao' needs the torchao package (pip install torchao)") from None
    return Int8DynamicActivationInt8WeightConfig() if ab == 8 else Int8WeightOnlyConfig()


def _install_torchao(m: nn.Linear, config) -> Callable[[], None]:
    from torchao.quantization import quantize_

    original = m.weight
    quantize_(m, config)  # swaps m.weight for a quantized tensor subclass; the module stays an nn.Linear

    def undo():
        m.weight = original

    return undo


def _swap_weight(m: nn.Module, new: torch.Tensor) -> Callable[[], None]:
    original = m.weight
    m.weight = nn.Parameter(new, requires_grad=False)

    def undo():
        m.weight = original

    return undo


def _quantize_layer(name: str, m: nn.Module, wb: int, ab: int, cfg: QuantConfig, calib: QuantCalibration,
                    groups: tuple[_GroupOf, list], handle: Handle, device: torch.device) -> str:
    """Quantize one layer; returns 'real' or 'simulated'."""
    group_of, members = groups
    ao = _torchao_config(m, wb, ab) if cfg.real_kernels and cfg.kernels == "torchao" else None
    if ao is not None:
        handle.on_remove(_install_torchao(m, ao))
        return "real"
    if cfg.real_kernels and cfg.kernels == "tuner" and (wb, ab) == (8, 8) and _int8_kernel_fits(m, device):
        clip_a = [calib.act_range(name, 8, ts) for ts in members]
        handle.on_remove(_install_int8_linear(m, calib.weight_range(name, m.weight, 8), clip_a, group_of))
        return "real"
    if wb < FULL:
        handle.on_remove(_swap_weight(m, fake_quant_weight(m.weight, calib.weight_range(name, m.weight, wb), wb)))
    if ab < FULL:
        ranges = [calib.act_range(name, ab, ts).to(device) for ts in members]
        handle.on_remove(m.register_forward_pre_hook(ActivationQuantHook(ranges, ab, group_of)).remove)
    return "simulated"


@QuantConfig.register_apply
def apply(target, cfg: QuantConfig) -> Handle:
    from tuner.denoiser import denoiser_of

    unet, _ = denoiser_of(target)  # a U-Net or a DiT: the Linear (and Conv2d) layers of either
    names = quantizable_layers(unet)
    bits = cfg.layer_bits(names)
    info = {"layer_bits": bits, "real_kernel_layers": [], "simulated_layers": []}  # lists of layer names
    quantized = [n for n in names if bits[n] != (FULL, FULL)]
    if not quantized:
        return Handle("quant", info=info)  # 32/32 everywhere: the model is not touched
    if unet in ACTIVE:
        raise TunerError("method 'quant' is already applied to this U-Net")
    calib = get_calibration(target, unet, need_activations=any(bits[n][1] < FULL for n in quantized))
    modules = dict(unet.named_modules())
    device = next(unet.parameters()).device
    edges, members = calib.time_groups(cfg.time_groups)
    info["time_groups"] = len(members)
    handle = Handle("quant", info=info)
    group_of = _GroupOf(unet, edges)
    handle.on_remove(group_of.close)
    try:
        for name in quantized:
            (wb, ab) = bits[name]
            if ab < FULL and name not in calib.act_absmax:
                raise TunerError(f"method 'quant': layer '{name}' has no calibrated activation range "
                                 f"(it did not run during calibration)")
            kind = _quantize_layer(name, modules[name], wb, ab, cfg, calib, (group_of, members), handle, device)
            info["real_kernel_layers" if kind == "real" else "simulated_layers"].append(name)
    except BaseException:
        handle.remove()
        raise
    ACTIVE.add(unet)
    handle.on_remove(lambda: ACTIVE.discard(unet))
    return handle
