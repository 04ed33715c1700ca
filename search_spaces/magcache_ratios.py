"""MagCache's magnitude ratios in every config the search proposes: the study's measured ones (the model
fact `mag_ratios`, from `MagCacheConfig.prepare`), as measured (the method interpolates them to each call's
step count), so an exported config runs without the study. No gene: a fact, not a choice. Without the
fact (a space built without a model), configs leave `mag_ratios` out and calibrate on their first call.
"""

from __future__ import annotations

from tuner.search_spaces.derived import EXTENSIONS, Extension
from tuner.search_spaces.params import Condition, Family, TableReader


class MeasuredRatios(Extension):
    def __init__(self):
        self.ratios = None

    def declare(self, family: Family, r: TableReader, context, on: Condition) -> None:
        self.ratios = context.fact("magcache", "mag_ratios")

    def decode(self, family: Family, values: dict, num_steps: int) -> dict:
        return {"mag_ratios": list(self.ratios)} if self.ratios else {}


EXTENSIONS["magcache"] = MeasuredRatios
