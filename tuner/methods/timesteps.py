"""Timestep selection (TMPQ-DM, arXiv 2404.09532): run the solver on a chosen descending timestep list, or
for a step count at the solver's own spacing (`{"count": 5}`: what "UniPC at 5 steps" means to a user).

The method itself only sets `pipe.timesteps_override` (a list) or `pipe.steps_override` (a count); tuner's
DDIM/DDPM rules accept any descending list, diffusers' schedulers those their `set_timesteps` accepts
(tuner.solvers.set_schedule; a refused list fails that trial with the reason). The helpers below build
the lists the search proposes:

- `uniform_timesteps(n)`: the pipeline's default DDIM spacing ("leading": t = i·(T//n), i = n-1..0).
- `tmpq_group_edges(T, G)`: TMPQ-DM's quadratic, non-uniform groups. TMPQ-DM places G points at
  linspace(0, √(0.8·T), G)² (integer part) and uses them as left edges: group i is [p_i, p_{i+1}),
  the last group runs to T. Groups are therefore short near t=0 (where detail is formed) and long
  near t=T. TMPQ-DM drops the empty groups that the integer part creates for large G; we instead move
  each repeated edge up by one so that G groups always exist (a grouping of G groups = G steps).
- `grouping_to_timesteps(choices, edges)`: one timestep per group (choices[i] = offset inside group i),
  `counts_to_timesteps(counts, edges)`: several evenly spaced timesteps per group.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

from tuner.errors import TunerError
from tuner.methods.diffusers_schedule import apply_steps, apply_timesteps, is_diffusers_pipeline
from tuner.methods.base import Handle, MethodConfig, register_method, resolve_pipeline
from tuner.methods.knobs import as_integer, knob

NUM_TRAIN_TIMESTEPS = 1000
TMPQ_RANGE_FRACTION = 0.8  # TMPQ-DM spreads its quadratic points over the first 80% of √T


# --- timestep lists --------------------------------------------------------------------------------
def uniform_timesteps(n: int, num_train: int = NUM_TRAIN_TIMESTEPS) -> list[int]:
    """n timesteps, descending, as DDIMScheduler with timestep_spacing='leading', steps_offset=0."""
    if not (1 <= n <= num_train):
        raise TunerError(f"number of steps {n} is out of range (1..{num_train})")
    step = num_train // n
    return [i * step for i in range(n - 1, -1, -1)]


def tmpq_group_edges(num_train: int = NUM_TRAIN_TIMESTEPS, groups: int = 10) -> list[int]:
    """G+1 increasing edges [0, e_1, ..., e_{G-1}, num_train]; group i is [edges[i], edges[i+1])."""
    if not (1 <= groups <= num_train):
        raise TunerError(f"groups={groups} is out of range (1..{num_train})")
    top = math.sqrt(TMPQ_RANGE_FRACTION * num_train)
    points = [int((top * i / (groups - 1)) ** 2) if groups > 1 else 0 for i in range(groups)]
    edges = []
    for p in points:  # strictly increasing: a repeated integer edge moves up by one
        edges.append(max(p, edges[-1] + 1) if edges else 0)
    if edges[-1] >= num_train:  # only when G is close to T: fall back to spreading the tail evenly
        edges = list(range(groups))
    return edges + [num_train]


def group_sizes(edges: Sequence[int]) -> list[int]:
    return [b - a for a, b in zip(edges[:-1], edges[1:])]


def grouping_to_timesteps(choices: Sequence[int], edges: Sequence[int]) -> list[int]:
    """One timestep per group: choices[i] in [0, size_i) is the offset inside group i. Descending."""
    sizes = group_sizes(edges)
    if len(choices) != len(sizes):
        raise TunerError(f"grouping has {len(choices)} choices for {len(sizes)} groups")
    out = []
    for i, (c, size) in enumerate(zip(choices, sizes)):
        if isinstance(c, bool) or not isinstance(c, int) or not (0 <= c < size):
            raise TunerError(f"group {i} choice {c!r} is out of range (0..{size - 1})")
        out.append(edges[i] + c)
    return sorted(out, reverse=True)


def counts_to_timesteps(counts: Sequence[int], edges: Sequence[int]) -> list[int]:
    """counts[i] timesteps evenly spaced inside group i (0 allowed). Descending, no repeats."""
    sizes = group_sizes(edges)
    if len(counts) != len(sizes):
        raise TunerError(f"grouping has {len(counts)} counts for {len(sizes)} groups")
    out = []
    for i, (c, size) in enumerate(zip(counts, sizes)):
        if isinstance(c, bool) or not isinstance(c, int) or not (0 <= c <= size):
            raise TunerError(f"group {i} count {c!r} is out of range (0..{size})")
        out.extend(edges[i] + (j * size) // c for j in range(c))
    if not out:
        raise TunerError("a grouping must select at least one timestep")
    return sorted(out, reverse=True)


def check_timesteps(timesteps: Sequence[int], num_train: int, what: str = "method 'timesteps'") -> list[int]:
    ts = list(timesteps)
    if not ts:
        raise TunerError(f"{what}: timesteps must not be empty")
    for t in ts:
        if isinstance(t, bool) or not isinstance(t, int):
            raise TunerError(f"{what}: timesteps must be integers, got {t!r}")
        if not (0 <= t <= num_train - 1):
            raise TunerError(f"{what}: timestep {t} is out of range (0..{num_train - 1})")
    for a, b in zip(ts[:-1], ts[1:]):
        if not a > b:
            raise TunerError(f"{what}: timesteps must be strictly descending ({a} then {b})")
    return ts


# --- the method ------------------------------------------------------------------------------------
def _timestep_set(v) -> list[int]:
    """Unique training timesteps in any order; they run from high to low, so they are stored descending."""
    if not isinstance(v, list) or not v:
        raise ValueError(f"timesteps must be a non-empty list of integers, got {v!r}")
    out = []
    for t in v:
        if as_integer(t) is None:
            raise ValueError(f"timesteps must be integers, got {t!r}")
        if not 0 <= t <= NUM_TRAIN_TIMESTEPS - 1:
            raise ValueError(f"timestep {t} is out of range (0..{NUM_TRAIN_TIMESTEPS - 1})")
        out.append(as_integer(t))
    if len(set(out)) != len(out):
        raise ValueError("timesteps must not repeat a value")
    return sorted(out, reverse=True)


@register_method("timesteps", order=11, default_space=True)  # after solver: it wraps the scheduler in use
@dataclass
class TimestepsConfig(MethodConfig):
    """Which denoising timesteps run: a list (e.g. a TMPQ-DM grouping; its length is the step count) or a step count."""

    timesteps: list = knob(uniform_timesteps(50), kind="custom", parse=_timestep_set,
                           schema={"type": "array", "minItems": 1, "uniqueItems": True,
                                   "items": {"type": "integer", "minimum": 0, "maximum": NUM_TRAIN_TIMESTEPS - 1}},
                           help="training timesteps to run, each below the model's num_train_timesteps")
    count: int = knob(None, kind="int", low=1, high=NUM_TRAIN_TIMESTEPS, nullable=True,
                      help="number of steps at the solver's own spacing, instead of a timesteps list")

    denoisers = ("unet", "dit")  # it acts on the scheduler, whatever denoises
    # The diffusers scheduler whose own timestep lists a user model's search proposes; None (the proxy):
    # tuner's pipeline runs any list.
    unmeasured_facts = {"scheduler": None}

    @classmethod
    def prepare(cls, study) -> dict:
        pipe = study.pipe
        return {} if getattr(pipe, "kind", "proxy") == "proxy" else {"scheduler": pipe.scheduler}

    @classmethod
    def from_dict(cls, data):
        if isinstance(data, dict) and "timesteps" in data and data.get("count") is not None:
            raise TunerError("method 'timesteps': give either timesteps (a list) or count, not both")
        return super().from_dict(data)

    @property
    def num_steps(self) -> int:
        return len(self.timesteps) if self.count is None else self.count

    def to_dict(self) -> dict:
        return {"timesteps": self.timesteps} if self.count is None else {"count": self.count}

    @classmethod
    def schema_rules(cls) -> list[dict]:
        both = {"required": ["timesteps", "count"], "properties": {"count": {"not": {"type": "null"}}}}
        return [{"not": both}]


@TimestepsConfig.register_apply
def apply(target, cfg: TimestepsConfig) -> Handle:
    """Makes every later pipeline call run on `cfg.timesteps`, or `cfg.count` steps (whatever
    num_inference_steps says)."""
    if is_diffusers_pipeline(target):
        if cfg.count is not None:
            return apply_steps(target, cfg.count)
        return apply_timesteps(target, check_timesteps(cfg.timesteps, int(target.scheduler.config.num_train_timesteps)))
    pipe = resolve_pipeline(target, "timesteps")
    num_train = int(pipe.scheduler.config.num_train_timesteps)
    ts = None if cfg.count is not None else check_timesteps(cfg.timesteps, num_train)
    previous = (pipe.timesteps_override, pipe.steps_override)

    def restore():
        pipe.timesteps_override, pipe.steps_override = previous

    pipe.timesteps_override, pipe.steps_override = (None, cfg.count) if ts is None else (list(ts), None)
    return Handle("timesteps", undo=[restore], info={"num_steps": cfg.count if ts is None else len(ts)})
