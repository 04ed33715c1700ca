"""Feature caching: DeepCache or FRDiff, or neither (both replace the same non-keyframe U-Net work).

Parameters
- `feature_cache` ∈ {none, deepcache, frdiff}.
- `deepcache.interval` (N), `deepcache.branch` (0 = shallowest; bounded by `SpaceContext.max_branch`),
  `deepcache.schedule` ∈ {uniform, nonuniform}; for nonuniform `deepcache.center` (a fraction of the
  trial's steps, so it stays meaningful when the timestep count changes) and `deepcache.power`.
- `frdiff.interval` (keyframe every M steps), `frdiff.bias` (b of the score mixing), `frdiff.mixing`.

Table keys: `[space.deepcache]` enabled, optional, interval, branch, schedule, center, power;
`[space.frdiff]` enabled, optional, interval, bias, mixing.
"""

from __future__ import annotations

from search_spaces.params import Condition, Family, Param, TableReader, number_param
from tuner.errors import TunerError

CHOICE = "feature_cache"
SCHEDULES = ("uniform", "nonuniform")
MAX_INTERVAL = 1000


class FeatureCacheFamily(Family):
    def __init__(self, tables: dict, context):
        super().__init__()
        methods, optional, readers = [], False, {}
        for key in ("deepcache", "frdiff"):
            if key in tables:
                r = TableReader(key, tables[key])
                if r.flag("enabled", True):
                    methods.append(key)
                    optional |= r.flag("optional", True)
                    readers[key] = r
                else:
                    r.rest.clear()
        self.add(Param(CHOICE, "categorical", choices=tuple((["none"] if optional else []) + methods),
                       help="feature caching method"))
        if "deepcache" in readers:
            self._deepcache(readers["deepcache"], context)
        if "frdiff" in readers:
            self._frdiff(readers["frdiff"])

    def _deepcache(self, r: TableReader, context) -> None:
        on = Condition(CHOICE, ("deepcache",))
        self.add(number_param("deepcache.interval", r.number_range("interval", [2, 5], 1, MAX_INTERVAL, integer=True),
                              integer=True, condition=on, help="one full step every N"))
        top = int(context.max_branch)
        if top < 0:
            raise TunerError("space.deepcache: this U-Net offers no DeepCache branch")
        self.add(number_param("deepcache.branch", r.number_range("branch", [0, top], 0, top, integer=True),
                              integer=True, condition=on, help="skip branch (0 = shallowest)"))
        self.add(Param("deepcache.schedule", "categorical", condition=on,
                       choices=r.choices("schedule", ["uniform"], SCHEDULES), help="keyframe placement"))
        nonuniform = Condition("deepcache.schedule", ("nonuniform",))
        self.add(number_param("deepcache.center", r.number_range("center", [0.1, 0.5], 0.0, 1.0, integer=False),
                              integer=False, condition=nonuniform, help="densest keyframes, fraction of steps"))
        self.add(number_param("deepcache.power", r.number_range("power", [1.0, 2.0], 1.0, 10.0, integer=False),
                              integer=False, condition=nonuniform, help="concentration around center"))
        r.finish()

    def _frdiff(self, r: TableReader) -> None:
        on = Condition(CHOICE, ("frdiff",))
        self.add(number_param("frdiff.interval", r.number_range("interval", [2, 4], 1, MAX_INTERVAL, integer=True),
                              integer=True, condition=on, help="one keyframe every M steps"))
        self.add(number_param("frdiff.bias", r.number_range("bias", [0.2, 0.8], 0.0, 1.0, integer=False),
                              integer=False, condition=on, help="score-mixing bias b"))
        self.add(Param("frdiff.mixing", "categorical", condition=on,
                       choices=r.choices("mixing", [True], (True, False)), help="score mixing on"))
        r.finish()

    def decode(self, values: dict, num_steps: int) -> dict[str, dict]:
        method = self.get(values, CHOICE)
        if method == "deepcache":
            cfg = {"interval": int(self.get(values, "deepcache.interval")),
                   "branch": int(self.get(values, "deepcache.branch")),
                   "schedule": self.get(values, "deepcache.schedule")}
            if cfg["schedule"] == "nonuniform":
                cfg["center"] = int(round(float(self.get(values, "deepcache.center")) * max(0, num_steps - 1)))
                cfg["power"] = float(self.get(values, "deepcache.power"))
            return {"deepcache": cfg}
        if method == "frdiff":
            return {"frdiff": {"interval": int(self.get(values, "frdiff.interval")),
                               "bias": float(self.get(values, "frdiff.bias")),
                               "mixing": bool(self.get(values, "frdiff.mixing"))}}
        return {}


KEYS = ("deepcache", "frdiff")


def build(tables: dict, context) -> FeatureCacheFamily:
    return FeatureCacheFamily(tables, context)
