"""Timesteps: how many denoising steps, and which (uniform DDIM spacing or a TMPQ-DM grouping).

Parameters
- `timesteps.schedule` ∈ {uniform, tmpq} (tmpq only when the table gives `groups`).
- uniform: `timesteps.count` ∈ counts (default: the baseline step count and 3/5, 1/2, 2/5, 3/10, 1/4,
  1/5 of it: 20 -> 12, 10, 8, 6, 5, 4, where the solvers users run sit). A count decodes to
  `{"count": n}`, run at the solver's own spacing (every scheduler can run a count); a count equal to the
  baseline's emits no `timesteps` method, so the baseline stays the baseline. TMPQ groupings are lists:
  on a user model they need a scheduler that takes custom lists; on the proxy a solver that refuses one
  (unipc, deis, karras sigmas) fails that trial with the reason.
- tmpq: `timesteps.groups` ∈ groups (G); the 1000 training timesteps are split into G quadratic groups
  (`tuner.methods.timesteps.tmpq_group_edges`) and `timesteps.offset<i>` ∈ [0, 1] picks the timestep
  inside group i as a fraction of the group's width (so one gene means the same for every G).

The trial's step count (uniform: count; tmpq: G) is what the other families scale against
(CA-ToMe checkpoints, DeepCache's center).

Table keys: `[space.timesteps]` enabled, counts, groups, schedules.
"""

from __future__ import annotations

import math

from tuner.search_spaces.params import Condition, Family, Param, TableReader
from tuner.errors import TunerError

SCHEDULES = ("uniform", "tmpq")


def default_counts(steps: int) -> list[int]:
    return sorted({max(1, round(steps * f)) for f in (1.0, 0.6, 0.5, 0.4, 0.3, 0.25, 0.2)}, reverse=True)


class TimestepsFamily(Family):
    def __init__(self, table, context):
        super().__init__()
        self.steps = int(context.steps)
        self.num_train = int(context.num_train_timesteps)
        self.scheduler = context.fact("timesteps", "scheduler")  # None: the proxy, which runs any list
        r = TableReader("timesteps", table)
        self.enabled = r.flag("enabled", True)
        if not self.enabled:
            r.rest.clear()
            return
        is_count = lambda x: isinstance(x, int) and not isinstance(x, bool) and 1 <= x <= self.num_train  # noqa: E731
        counts = r.choices("counts", default_counts(self.steps), check=is_count,
                           what=f"an integer step count in 1..{self.num_train}")
        groups = r.choices("groups", [], check=lambda g: is_count(g) and g >= 2,
                           what=f"an integer group count in 2..{self.num_train}") if "groups" in r.rest else ()
        schedules = r.choices("schedules", ["uniform", "tmpq"] if groups else ["uniform"], SCHEDULES)
        if "tmpq" in schedules and not groups:
            raise TunerError("space.timesteps: schedule 'tmpq' needs 'groups' (e.g. groups = [10, 20])")
        if "tmpq" in schedules and self.scheduler is not None:
            from tuner.solvers import takes_custom_timesteps

            if not takes_custom_timesteps(self.scheduler):
                raise TunerError(f"space.timesteps: TMPQ groupings need a scheduler that runs custom timestep lists; "
                                 f"{type(self.scheduler).__name__} does not (set [model] scheduler, e.g. "
                                 "EulerDiscreteScheduler or DDPMScheduler)")
        r.finish()
        self.add(Param("timesteps.schedule", "categorical", choices=schedules, help="uniform or TMPQ grouping"))
        self.add(Param("timesteps.count", "categorical", choices=tuple(counts),
                       condition=Condition("timesteps.schedule", ("uniform",)), help="number of steps"))
        if "tmpq" in schedules:
            self.add(Param("timesteps.groups", "categorical", choices=tuple(groups),
                           condition=Condition("timesteps.schedule", ("tmpq",)), help="TMPQ groups (= steps)"))
            for i in range(max(groups)):
                bigger = tuple(g for g in groups if g > i)
                self.add(Param(f"timesteps.offset{i}", "float", low=0.0, high=1.0,
                               condition=Condition("timesteps.groups", bigger), help=f"position in group {i}"))

    def neutral(self) -> dict:
        return {"timesteps.schedule": "uniform", "timesteps.count": self.steps} if self.enabled else {}

    def seeds(self) -> list[dict]:
        """A steps-only ladder: every searched count, uniform spacing."""
        if not self.enabled:
            return []
        counts = next((p.choices for p in self.params if p.name == "timesteps.count"), ())
        return [{"timesteps.schedule": "uniform", "timesteps.count": c} for c in counts if c != self.steps]

    def num_steps(self, values: dict) -> int:
        if not self.enabled:
            return self.steps
        if self.get(values, "timesteps.schedule") == "tmpq":
            return int(self.get(values, "timesteps.groups"))
        return int(self.get(values, "timesteps.count"))

    def decode(self, values: dict, num_steps: int) -> dict[str, dict]:
        if not self.enabled:
            return {}
        from tuner.methods.timesteps import grouping_to_timesteps, tmpq_group_edges

        if self.get(values, "timesteps.schedule") == "tmpq":
            g = int(self.get(values, "timesteps.groups"))
            edges = tmpq_group_edges(self.num_train, g)
            sizes = [b - a for a, b in zip(edges[:-1], edges[1:])]
            choices = [min(size - 1, int(math.floor(float(self.get(values, f"timesteps.offset{i}")) * size)))
                       for i, size in enumerate(sizes)]
            return {"timesteps": {"timesteps": grouping_to_timesteps(choices, edges)}}
        count = int(self.get(values, "timesteps.count"))
        if count == self.steps:
            return {}
        return {"timesteps": {"count": count}}  # at the solver's own spacing, on any scheduler


KEYS = ("timesteps",)


def build(tables: dict, context) -> TimestepsFamily:
    return TimestepsFamily(tables["timesteps"], context)
