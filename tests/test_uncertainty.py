"""Confidence intervals of a trial's FID (paired bootstrap over images) and speedup (timing rounds), and
the constraint judged on the upper bound."""

from types import SimpleNamespace

import optuna
import pytest
import torch

from tuner.uncertainty import Frechet, fid_interval, increase_pct, speedup_interval


def _features(n, d=6, seed=0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * 1.5 + shift


def test_batched_frechet_matches_the_proxy_classifiers_fid():
    from tuner.evaluators.fidelity import frechet_distance_of_features
    from tuner.proxy.classifier import ClassifierFeatures, load_classifier

    extractor = ClassifierFeatures(load_classifier())
    d = int(extractor(torch.zeros(1, 1, 16, 16)).shape[1])
    ref, a = _features(300, d, seed=1), _features(64, d, seed=2, shift=0.3)
    assert float(Frechet(ref)(a[None])[0]) == pytest.approx(frechet_distance_of_features(a, ref, extractor), rel=1e-5)


def test_frechet_of_sets_smaller_than_their_dimension_is_the_sample_space_fid():
    """Fewer images than dimensions (Inception's 2048-d): scored in the samples' space, same value as the
    one-pair FID and as the d x d form, without d x d matrices per set."""
    from tuner.evaluators.fidelity import frechet_distance

    ref, sets = _features(12, d=40, seed=1), torch.stack([_features(6, d=40, seed=s, shift=0.2) for s in (2, 3)])
    frechet = Frechet(ref)
    fast = frechet(sets)
    assert [float(v) for v in fast] == pytest.approx([frechet_distance(x, ref) for x in sets], rel=1e-9)
    mu = sets.mean(1)
    c = sets - mu[:, None]
    cov = c.transpose(1, 2) @ c / 5
    inner = frechet.root @ cov @ frechet.root  # the d x d form on the same sets
    slow = ((mu - frechet.mu) ** 2).sum(-1) + cov.diagonal(dim1=1, dim2=2).sum(-1) + frechet.trace \
        - 2 * torch.linalg.eigvalsh(inner).clamp(min=0).sqrt().sum(-1)
    assert [float(v) for v in fast] == pytest.approx([float(v) for v in slow], rel=1e-6)


def test_identical_candidate_has_a_zero_width_difference():
    ref, base = _features(300, seed=1), _features(64, seed=2)
    ci = fid_interval(base.clone(), base, ref)
    assert ci["fid_delta"] == 0 and ci["fid_delta_lo"] == 0 and ci["fid_delta_hi"] == 0
    assert ci["fid_lo"] < ci["fid_hi"]  # the FID itself is uncertain at N=64


def test_paired_difference_is_tighter_than_either_fid():
    """Common random numbers: a candidate close to the baseline image by image has a much narrower
    interval on the difference than on its own FID."""
    ref, base = _features(300, seed=1), _features(64, seed=2)
    cand = base + 0.2 * _features(64, seed=3) + 0.1
    ci = fid_interval(cand, base, ref)
    fc = float(Frechet(ref)(cand[None])[0])
    assert ci["fid_lo"] <= fc <= ci["fid_hi"]
    assert ci["fid_delta_lo"] <= ci["fid_delta"] <= ci["fid_delta_hi"]
    assert (ci["fid_delta_hi"] - ci["fid_delta_lo"]) < 0.5 * (ci["fid_hi"] - ci["fid_lo"])
    assert fid_interval(cand, base, ref) == ci  # fixed bootstrap seed: reproducible


def test_paired_features_must_have_the_same_shape_and_enough_images():
    with pytest.raises(ValueError, match="paired"):
        fid_interval(_features(10), _features(12), _features(50))
    with pytest.raises(ValueError, match="at least 4"):
        fid_interval(_features(3), _features(3), _features(50))


def test_speedup_interval_is_the_ratio_of_medians_with_its_spread():
    base, cand = [1.0, 1.2, 0.9, 1.1, 1.0], [0.5, 0.55, 0.6, 0.45, 0.5]
    ci = speedup_interval(base, cand)
    assert ci["latency_repeats"] == 5
    assert ci["speedup_lo"] < 1.0 / 0.5 < ci["speedup_hi"]
    steady = speedup_interval([2.0] * 4, [1.0] * 4)
    assert steady["speedup_lo"] == pytest.approx(2.0) and steady["speedup_hi"] == pytest.approx(2.0)
    with pytest.raises(ValueError):
        speedup_interval([1.0], [1.0, 2.0])


def test_increase_pct():
    assert increase_pct(0.5, 5.0) == pytest.approx(10.0)


def _objective(result: dict, cap: float, monkeypatch):
    """A TrialObjective whose one rung scores `result` (no model runs)."""
    from tuner.study import race
    from tuner.study.objective import TrialObjective

    space = SimpleNamespace(suggest=lambda trial: {}, to_config=lambda values: SimpleNamespace(
        to_dict=lambda: {"methods": {"tome": {"ratio": 0.5}}}))
    spec = SimpleNamespace(objectives=["latency", "fid"], maximized=[False, False],
                           constraints=SimpleNamespace(max_fid_increase=cap, max_memory_gb=None),
                           evaluator=SimpleNamespace(rungs=lambda n, capped: (n,)), image_set=SimpleNamespace(n_images=64))
    ctx = SimpleNamespace(space=space, spec=spec, eval=None, baseline={"fid": 5.0, "seconds_per_image": 0.1})
    keys = ("fid", "fid_delta", "fid_delta_lo", "fid_delta_hi")
    monkeypatch.setattr(race, "grow_candidate", lambda *a: ([0] * 64, {"bitops": result["bitops"]}, {}))
    monkeypatch.setattr(race, "score", lambda ectx, images, scale: {
        **{k: result[k] for k in keys}, "n_images": 64,
        **{f"fid_increase_pct{s}": scale.change_pct(result[f"fid_delta{s}"]) for s in ("", "_lo", "_hi")}})
    objective = TrialObjective(ctx, spec)
    monkeypatch.setattr(objective, "_latency", lambda config: {k: result[k] for k in (
        "speedup", "seconds_per_image", "speedup_lo", "speedup_hi")})
    return objective


def test_constraint_uses_the_upper_bound_not_the_point(monkeypatch):
    # point +5 %, upper bound +15 %: infeasible under a 10 % cap, feasible under 20 %
    result = {"fid": 5.25, "fid_delta": 0.25, "fid_delta_lo": 0.05, "fid_delta_hi": 0.75, "speedup": 2.0,
              "seconds_per_image": 0.05, "bitops": 1.0, "speedup_lo": 1.8, "speedup_hi": 2.2}
    for cap, feasible in ((10.0, False), (20.0, True)):
        study = optuna.create_study(directions=["minimize", "minimize"])
        trial = study.ask()
        values = _objective(result, cap, monkeypatch)(trial)
        study.tell(trial, values)
        frozen = study.trials[0]
        assert frozen.user_attrs["fid_increase_pct"] == pytest.approx(5.0)
        assert frozen.user_attrs["fid_increase_pct_hi"] == pytest.approx(15.0)
        assert frozen.user_attrs["speedup_lo"] == 1.8
        assert frozen.constraints["fid_increase_pct"] == pytest.approx(15.0 - cap)
        assert (frozen.constraints["fid_increase_pct"] <= 0) == feasible
        assert values == [pytest.approx(0.05), 5.25]
