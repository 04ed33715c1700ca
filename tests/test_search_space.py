"""Search spaces: one declaration per knob serving Optuna and DEAP, conditions, decoding to configs."""

from __future__ import annotations

import json
import random
from collections import Counter

import numpy as np
import optuna
import pandas as pd
import pytest
from optuna.distributions import BaseDistribution, CategoricalDistribution

from tuner.search_spaces.defaults import default_families
from tuner.samplers.deap_ga import seeded_globals
from tuner.search_spaces.space import SpaceContext, build_space
from tuner.search_spaces.catome_checkpoints import JUST_BELOW, profile_distances
from tuner.config import AccelConfig
from tuner.errors import TunerError

optuna.logging.set_verbosity(optuna.logging.WARNING)

STEPS = 50
SPIKES = {5: 0.40, 12: 0.25, 30: 0.15, 44: 0.30}  # mean Jaccard distance at these steps; 0.02 elsewhere
# Layer names in the U-Net's naming (as tuner.methods.quant.quantizable_layers returns them).
LAYERS = ["conv_in", "time_embedding.linear_1", "time_embedding.linear_2",
          "down_blocks.0.resnets.0.conv1", "down_blocks.0.attentions.0.proj_in",
          "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q", "down_blocks.1.resnets.0.conv1",
          "down_blocks.2.resnets.0.conv2", "mid_block.resnets.0.conv1", "up_blocks.0.resnets.0.conv1",
          "up_blocks.1.attentions.0.proj_out", "up_blocks.2.resnets.1.conv2", "conv_out"]


def synthetic_profile(steps: int = STEPS) -> pd.DataFrame:
    rows = []
    for block, scale in (("down_blocks.0.attentions.0.transformer_blocks.0", 0.9),
                         ("up_blocks.2.attentions.0.transformer_blocks.0", 1.1)):
        for s in range(steps):
            jd = float("nan") if s == 0 else SPIKES.get(s, 0.02) * scale
            rows.append({"block": block, "level": "D1", "step": s, "n_pairs": 40.0,
                         "jaccard_distance": jd, "threshold": 0.7})
    return pd.DataFrame(rows)


FULL_TABLE = {
    "tome": {"ratio": [0.1, 0.7], "max_downsample": [1, 2]},
    "catome": {"threshold": [0.4, 1.0], "max_checkpoints": [2, 20]},
    "deepcache": {"interval": [2, 6], "branch": [0, 2], "schedule": ["uniform", "nonuniform"]},
    "frdiff": {"interval": [2, 4], "mixing": [True, False]},
    "timesteps": {"counts": [10, 25, 50], "groups": [5, 10]},
    "quant": {"bits": [4, 6, 8, 32], "separate_act": True, "act_bits": [8, 32]},
    "solver": {},
}


@pytest.fixture(scope="module")
def context():
    return SpaceContext(steps=STEPS, facts={"catome": {"jaccard_profile": synthetic_profile()},
                                            "quant": {"quant_layers": list(LAYERS)}, "deepcache": {"max_branch": 2}})


@pytest.fixture(scope="module")
def space(context):
    return build_space(FULL_TABLE, context)


def test_each_param_maps_to_both_engines(space):
    rng = random.Random(0)
    py, npr = random.Random(1), np.random.RandomState(1)
    assert len(space.params) > 30
    for p in space.params:
        dist = p.distribution()
        assert isinstance(dist, BaseDistribution)
        seen = set()
        for _ in range(40):
            gene = p.random_gene(rng)
            value = p.decode(gene)
            assert dist._contains(dist.to_internal_repr(value)), (p.name, value)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            expected = pytest.approx(value, rel=1e-12) if numeric else value
            assert p.decode(p.encode(value)) == expected  # gene <-> value round trip
            with seeded_globals(py, npr):
                mutated = p.decode(p.mutate(gene))
            assert dist._contains(dist.to_internal_repr(mutated)), (p.name, mutated)
            seen.add(mutated)
        if isinstance(dist, CategoricalDistribution):
            assert seen == set(dist.choices), p.name  # uniform resampling reaches every choice
        else:
            assert len(seen) > 1, p.name


def test_conditional_params_absent_when_method_off(space):
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0))
    seen_methods = Counter()
    for _ in range(150):
        trial = study.ask()
        values = space.suggest(trial)
        assert trial.params == values
        names = set(values)
        tm = values["token_merging"]
        seen_methods[tm] += 1
        assert (tm == "tome") == any(n.startswith("tome.") for n in names)
        assert (tm == "catome") == any(n.startswith("catome.") for n in names)
        fc = values["feature_cache"]
        assert (fc == "deepcache") == any(n.startswith("deepcache.") for n in names)
        assert (fc == "frdiff") == any(n.startswith("frdiff.") for n in names)
        nonuniform = values.get("deepcache.schedule") == "nonuniform"
        assert nonuniform == ("deepcache.center" in names) == ("deepcache.power" in names)
        assert (values["solver.name"] == "ddpm") == ("solver.coefficients" in names)
        assert values["quant.enabled"] == any(n.startswith("quant.bits.") for n in names)
        if values["timesteps.schedule"] == "tmpq":
            g = values["timesteps.groups"]
            assert "timesteps.count" not in names
            assert {n for n in names if n.startswith("timesteps.offset")} == {f"timesteps.offset{i}" for i in range(g)}
        else:
            assert "timesteps.groups" not in names and "timesteps.offset0" not in names
        study.tell(trial, [0.0, 0.0])
    assert set(seen_methods) == {"none", "tome", "catome"}


def test_200_random_draws_give_valid_configs(space):
    rng = random.Random(0)
    methods = Counter()
    for _ in range(200):
        values = space.values_from_genome(space.random_genome(rng))
        cfg = space.to_config(values)
        assert isinstance(cfg, AccelConfig)
        again = AccelConfig.from_dict(cfg.to_dict())  # what export writes loads back
        assert again.to_dict() == cfg.to_dict()
        n = space.num_steps(values)
        methods.update(list(cfg.methods))
        if "timesteps" in cfg.methods:
            assert cfg.methods["timesteps"].num_steps == n
        if "catome" in cfg.methods:
            ckpts = cfg.methods["catome"].checkpoints
            assert ckpts[0] == 0 and all(0 <= s < n for s in ckpts) and len(ckpts) <= values["catome.checkpoint_max"]
        if cfg.methods.get("deepcache") and cfg.methods["deepcache"].schedule == "nonuniform":
            assert 0 <= cfg.methods["deepcache"].center < n
        if "quant" in cfg.methods:
            per_layer = cfg.methods["quant"].per_layer
            assert set(per_layer) <= set(LAYERS)
    assert {"tome", "catome", "deepcache", "frdiff", "timesteps", "quant", "solver"} <= set(methods)


def test_neutral_choices_give_the_baseline_config(space):
    values = {"timesteps.schedule": "uniform", "timesteps.count": STEPS, "solver.name": "dpmsolver++",
              "solver.order": 2, "quant.enabled": False, "token_merging": "none", "feature_cache": "none"}
    # the baseline: only its solver, named (a config must not depend on which pipeline's own solver it meets)
    assert space.to_config(values).to_dict()["methods"] == {"solver": {
        "name": "dpmsolver++", "order": 2, "coefficients": "baseline", "spacing": "leading", "karras": False}}


def test_quant_groups_per_block_first_and_last_alone(space):
    groups = [p.name[len("quant.bits."):] for p in space.params if p.name.startswith("quant.bits.")]
    assert groups == ["conv_in", "time_embedding", "down_blocks.0", "down_blocks.1", "down_blocks.2",
                      "mid_block", "up_blocks.0", "up_blocks.1", "up_blocks.2", "conv_out"]
    values = {p.name: p.decode(0.0) for p in space.params}  # everything at its first choice
    values.update({"quant.enabled": True, "quant.bits.conv_in": 8, "quant.act.conv_in": 32,
                   "quant.bits.down_blocks.0": 4, "quant.act.down_blocks.0": 8})
    per_layer = space.to_config(values).methods["quant"].per_layer
    assert per_layer["conv_in"] == {"w": 8, "a": 32}
    block0 = [n for n in LAYERS if n.startswith("down_blocks.0.")]
    assert all(per_layer[n] == {"w": 4, "a": 8} for n in block0)


def test_checkpoint_mutation_follows_the_profile(space, context):
    """DEAP's mutation of the δ gene picks spike s with probability ∝ JD(s), and s then is a checkpoint."""
    from tuner.methods.catome_profile import checkpoints_from_profile

    delta = space.by_name["catome.checkpoint_delta"]
    dist = profile_distances(context.fact("catome", "jaccard_profile"))
    steps = list(range(1, STEPS))
    expected = np.array([dist[s] for s in steps]) / sum(dist[s] for s in steps)
    spike_values = {s: dist[s] * JUST_BELOW for s in SPIKES}

    def step_of(v):  # the spike whose height v sits just below, else "flat"
        hit = [s for s, sv in spike_values.items() if abs(v - sv) < 1e-9]
        return hit[0] if hit else "flat"
    py, npr = random.Random(123), np.random.RandomState(123)
    n = 4000
    counts = Counter()
    with seeded_globals(py, npr):
        for _ in range(n):
            v = delta.decode(delta.mutate(delta.random_gene(py)))
            counts[step_of(v)] += 1
    # Spike steps are drawn in proportion to their distance; the 45 flat steps share the rest.
    for s in SPIKES:
        p = expected[s - 1]
        assert abs(counts[s] / n - p) < 4 * (p * (1 - p) / n) ** 0.5, (s, counts[s] / n, p)
    p_flat = sum(expected[s - 1] for s in steps if s not in SPIKES)
    assert abs(counts["flat"] / n - p_flat) < 4 * (p_flat * (1 - p_flat) / n) ** 0.5
    # Setting δ just below a spike makes that spike a checkpoint (with room for every checkpoint).
    for s in SPIKES:
        assert s in checkpoints_from_profile(context.fact("catome", "jaccard_profile"), dist[s] * JUST_BELOW, STEPS)


def test_checkpoints_scale_to_the_trial_step_count(space, context):
    values = {"timesteps.schedule": "uniform", "timesteps.count": 10, "solver.name": "ddim",
              "quant.enabled": False, "token_merging": "catome", "catome.threshold": 0.7,
              "catome.max_downsample": 1, "catome.checkpoint_delta": 0.2, "catome.checkpoint_max": 20,
              "feature_cache": "none"}
    from tuner.methods.catome_profile import checkpoints_from_profile

    at_50 = checkpoints_from_profile(context.fact("catome", "jaccard_profile"), 0.2, 20)
    assert {5, 12, 44} <= set(at_50)  # the spikes above δ
    got = space.to_config(values).methods["catome"].checkpoints
    assert got == sorted({min(9, round(s * 10 / 50)) for s in at_50})  # same fraction of a 10-step run
    assert {1, 2, 9} <= set(got)


def test_inactive_genes_are_carried_not_suggested(space):
    rng = random.Random(5)
    genome = space.random_genome(rng)
    values = space.values_from_genome(genome)
    values["token_merging"] = "none"
    pruned = space.prune(values)
    assert not any(k.startswith(("tome.", "catome.")) for k in pruned)
    back = space.genome_from_values(pruned, fill=genome)
    i = [p.name for p in space.params].index("tome.ratio")
    assert back[i] == genome[i]


@pytest.mark.parametrize("profile", [None, "flat"])
def test_without_a_usable_profile_catome_recomputes_every_step(profile):
    if profile == "flat":  # a profile whose pair sets never change has no spike to place checkpoints at
        profile = synthetic_profile(20).assign(jaccard_distance=0.0)
    space = build_space({"catome": {"optional": False}},
                        SpaceContext(steps=20, facts={"catome": {"jaccard_profile": profile}}))
    assert [p.name for p in space.params] == ["catome.threshold"]
    cfg = space.to_config({"catome.threshold": 0.8})
    assert cfg.methods["catome"].checkpoints is None and cfg.methods["catome"].threshold == 0.8


@pytest.mark.parametrize("table, ctx_kw, message", [
    ({"bogus": {}}, {}, "unknown method 'bogus'"),
    ({"tome": {"ratio": [0.1, 1.2]}}, {}, "space.tome.ratio: [0.1, 1.2] is out of range"),
    ({"tome": {"ratio": [0.6, 0.1]}}, {}, "needs low <= high"),
    ({"tome": {"ratoi": [0.1, 0.2]}}, {}, "space.tome: unknown key(s) ratoi"),
    ({"tome": "yes"}, {}, "space.tome must be a table"),
    ({"tome": {"max_downsample": [3]}}, {}, "space.tome.max_downsample: 3 is not one of"),
    ({"deepcache": {"branch": [0, 5]}}, {"facts": {"deepcache": {"max_branch": 2}}}, "space.deepcache.branch: [0, 5] is out of range (0..2)"),
    ({"deepcache": {"interval": [0.5, 3]}}, {}, "must be [low, high] of integers"),
    ({"frdiff": {"bias": [0, 2]}}, {}, "space.frdiff.bias"),
    ({"timesteps": {"counts": [0, 10]}}, {}, "space.timesteps.counts: 0 is not an integer step count"),
    ({"timesteps": {"schedules": ["tmpq"]}}, {}, "needs 'groups'"),
    ({"quant": {"bits": [3, 8]}}, {"facts": {"quant": {"quant_layers": ["conv_in"]}}}, "space.quant.bits: 3 is not one of"),
    ({"quant": {}}, {}, "needs the U-Net's layer names"),
    ({"catome": {"checkpoints": "profile"}}, {}, "needs the study's Jaccard profile"),
    ({"solver": {"name": ["plms"]}}, {}, "space.solver.name: 'plms' is not one of"),
    ({"sampler": {"names": ["plms"]}}, {}, "space.solver.name: 'plms' is not one of"),  # the round-1 name
    ({"sampler": {}, "solver": {}}, {}, "both 'sampler'"),
    ({"solver": {"enabled": "yes"}}, {}, "space.solver.enabled must be true or false"),
])
def test_bad_space_table_is_a_one_line_error(table, ctx_kw, message):
    with pytest.raises(TunerError) as e:
        build_space(table, SpaceContext(steps=STEPS, **ctx_kw))
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_values_outside_the_space_are_rejected(space):
    values = space.values_from_genome(space.random_genome(random.Random(3)))
    values["token_merging"] = "tome"
    values["tome.ratio"] = 0.9  # declared range is [0.1, 0.7]
    values.setdefault("tome.max_downsample", 1)
    with pytest.raises(TunerError, match="tome.ratio"):
        space.to_config(values)
    del values["tome.ratio"]
    with pytest.raises(TunerError, match="no value for active parameter 'tome.ratio'"):
        space.to_config(values)


def test_default_space_is_small_and_quant_only_with_bitops():
    ctx = SpaceContext(steps=STEPS, facts={"catome": {"jaccard_profile": synthetic_profile()},
                                           "quant": {"quant_layers": list(LAYERS)}})
    plain = build_space(default_families(), ctx)
    names = {p.name for p in plain.params}
    assert {"token_merging", "feature_cache", "timesteps.count", "solver.name"} <= names
    assert not any(n.startswith("quant.") for n in names) and len(plain.params) <= 16
    with_bitops = build_space(default_families(["latency", "fid", "bitops"]), ctx)
    assert any(p.name.startswith("quant.bits.") for p in with_bitops.params)


def test_warm_start_is_the_baseline_then_a_solver_ladder_then_each_method_at_its_defaults():
    space = build_space(default_families(), SpaceContext(steps=20, facts={"deepcache": {"max_branch": 2}}))
    configs = [space.to_config(values).to_dict()["methods"] for values in space.warm_start()]
    assert list(configs[0]) == ["solver"] and configs[0]["solver"]["name"] == "dpmsolver++"  # the baseline itself
    ladder = [(c["solver"]["name"], c["timesteps"]["count"]) for c in configs if list(c) == ["solver", "timesteps"]]
    assert ladder[:6] == [("unipc", k) for k in (12, 10, 8, 6, 5, 4)]  # what users swap in, right after the baseline
    assert {k for name, k in ladder if name == "dpmsolver++"} == {12, 10, 8, 6, 5, 4}
    assert any(c.get("tome", {}).get("ratio") == 0.5 for c in configs)
    assert any(c.get("deepcache", {}).get("interval") == 3 for c in configs)
    assert len(configs) == len({json.dumps(c, sort_keys=True) for c in configs})
    assert len(space.warm_start(limit=3)) == 3
    narrowed = build_space({"tome": {"ratio": [0.6, 0.7]}}, SpaceContext(steps=20))
    assert [v.get("tome.ratio") for v in narrowed.warm_start()] == [None, 0.6]  # the default, clamped into range


@pytest.mark.parametrize("solver,runs_list", [("deis", False), ("unipc", False), ("dpmsolver++", True), ("ddim", True)])
def test_a_grouping_with_a_solver_that_runs_only_counts_decodes_to_its_step_count(solver, runs_list):
    # the merged default study lost 10 of 40 trials to "DEISMultistepScheduler cannot run this timestep list"
    fixed = {"name": solver, **({"order": 2} if solver in ("deis", "unipc", "dpmsolver++") else {}), "karras": False}
    space = build_space({"solver": fixed, "timesteps": {"groups": [4], "schedules": ["tmpq"]}}, SpaceContext(steps=20))
    values = {"timesteps.schedule": "tmpq", "timesteps.groups": 4,
              **{f"timesteps.offset{i}": 0.5 for i in range(4)}}
    methods = space.to_config({k: v for k, v in values.items() if k in space.by_name}).to_dict()["methods"]
    assert methods["solver"]["name"] == solver
    if runs_list:
        assert len(methods["timesteps"]["timesteps"]) == 4
    else:
        assert methods["timesteps"] == {"count": 4}
