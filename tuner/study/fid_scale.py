"""The one FID scale of a study: what "FID change" means in every output (table, log line, `--json`,
plot, hypervolume, constraint, race, certification, `validate`, `export`, dashboard).

    change % = 100 x (FID of the candidate - FID of the baseline, on the same seeds and images) / F

F is the study's stored baseline `fid`: on the proxy the baseline's FID against the held-out digits at the
study's image set; on a user model the seed-noise floor (FID between the baseline's images and a second
baseline set drawn with other seeds), since there FID is measured against the baseline's own images and
the baseline scores (about) 0. So on a user model 0 % means "the same images as the baseline" (only the
baseline itself) and +10 % means "the images moved 10 % as far as drawing new noise moves them".

The study's `fid` objective is stored on this scale too: anchor + delta, where anchor is the baseline's
own FID against the reference (proxy: F; user model: `fid_to_itself`, about 0) and delta is the paired
difference measured at whatever number of images the trial reached. Paired differences cancel most of
FID's small-sample bias (FID_N ~ FID + c/N), so trials measured at different N stay comparable, and at
the study's own image set the objective is the candidate's FID exactly as before.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class FidScale:
    anchor: float  # the baseline's FID against the FID reference
    scale: float  # F: 100 % of change

    @classmethod
    def of(cls, baseline: dict) -> "FidScale":
        scale = float(baseline["fid"])
        anchor = float(baseline.get("fid_to_itself", scale))  # a user model: FID against its own images
        return cls(anchor, scale if scale > 0 else 1.0)

    def change_pct(self, delta: float) -> float:
        """Change in percent from a paired FID difference (candidate - baseline, same images)."""
        return 100.0 * float(delta) / self.scale

    def objective(self, delta: float) -> float:
        """The stored `fid` objective for a paired difference."""
        return self.anchor + float(delta)

    def change_of(self, fid_value: float) -> float:
        """Change in percent of a stored `fid` objective value."""
        return 100.0 * (float(fid_value) - self.anchor) / self.scale

    def normalized(self, fid_value: float) -> float:
        """1 + change/100: the hypervolume's baseline-normalized FID (1 = the baseline)."""
        return 1.0 + self.change_of(fid_value) / 100.0

    def cap_value(self, max_fid_increase: float) -> float:
        """The `fid` objective value at a cap of X percent (the plot's cap line)."""
        return self.anchor + self.scale * float(max_fid_increase) / 100.0


def change_of_trial(attrs: dict, fid_value: float, baseline: dict) -> float:
    """A stored trial's change: its `fid_increase_pct` when recorded, else from its `fid` objective."""
    stored = attrs.get("fid_increase_pct")
    if isinstance(stored, (int, float)):
        return float(stored)
    return FidScale.of(baseline).change_of(fid_value)
