import math

import pytest
import torch

from tuner.apply_config import apply as apply_config
from tuner.config import AccelConfig
from tuner.errors import TunerError
from tuner.methods.cache_schedule import nonuniform_keyframes
from tuner.methods.deepcache import DeepCacheConfig, apply
from tuner.step_context import get_step_context

CLASSES, SEEDS, STEPS = [1, 2, 3], [0, 1, 2], 9


def run(pipe, steps=STEPS):
    return pipe(CLASSES, SEEDS, num_inference_steps=steps)


def count_calls(module):
    """Counts real executions: hooks on a leaf conv inside `module` (the block's own __call__ still
    happens on cached steps, its contents do not)."""
    box = {"n": 0}
    conv = next(m for m in module.modules() if isinstance(m, torch.nn.Conv2d))
    handle = conv.register_forward_hook(lambda *a: box.__setitem__("n", box["n"] + 1))
    return box, handle


@pytest.mark.parametrize("bad", [dict(interval=0), dict(interval=1.5), dict(branch=-1), dict(schedule="cosine"),
                                 dict(power=0.5), dict(center=-2), dict(speed=3)])
def test_bad_config_is_a_one_line_error(bad):
    with pytest.raises(TunerError):
        DeepCacheConfig.from_dict(bad)


def test_branch_out_of_range_names_the_max(tiny_pipe):
    with pytest.raises(TunerError, match=r"0\.\.2"):
        apply(tiny_pipe, DeepCacheConfig(branch=3, cut="block"))
    with pytest.raises(TunerError, match=r"0\.\.7"):  # 3 blocks of one resnet: 3·2 + 1
        apply(tiny_pipe, DeepCacheConfig(branch=8))
    with pytest.raises(TunerError, match="cut must be one of"):
        DeepCacheConfig.from_dict({"cut": "module"})


def test_neutral_identical_reversible_and_reset_per_call(tiny_pipe):
    base = run(tiny_pipe)
    with apply_config(tiny_pipe, AccelConfig.from_dict({"schema_version": 2, "methods": {"deepcache": {"interval": 1}}})):
        assert torch.equal(run(tiny_pipe), base)
    handle = apply(tiny_pipe, DeepCacheConfig(interval=3, branch=0))
    first, second = run(tiny_pipe), run(tiny_pipe)
    handle.remove()
    assert not torch.equal(first, base)  # caching does change the result
    assert torch.equal(first, second)  # the cache does not leak between calls
    assert torch.equal(run(tiny_pipe), base)
    handle.remove()  # idempotent


def test_applying_twice_is_an_error(tiny_pipe):
    with apply(tiny_pipe, DeepCacheConfig()):
        with pytest.raises(TunerError, match="already applied"):
            apply(tiny_pipe, DeepCacheConfig())


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_block_cut_deep_blocks_run_only_on_keyframes(tiny_pipe, branch):
    unet = tiny_pipe.unet
    n = len(unet.down_blocks)
    watched = {f"down{i}": unet.down_blocks[i] for i in range(n)}
    watched.update({f"up{i}": unet.up_blocks[i] for i in range(n)})
    watched["mid"] = unet.mid_block
    watched[f"downsample{branch}"] = (unet.down_blocks[branch].downsamplers or [None])[0]
    watched = {k: v for k, v in watched.items() if v is not None}
    with apply(tiny_pipe, DeepCacheConfig(interval=3, branch=branch, cut="block")):
        counters = {k: count_calls(m) for k, m in watched.items()}
        run(tiny_pipe)
        for _, h in counters.values():
            h.remove()
    runs = {k: box["n"] for k, (box, _) in counters.items()}
    keyframes = 3  # steps 0, 3, 6 of 9
    for i in range(n):
        assert runs[f"down{i}"] == (STEPS if i <= branch else keyframes)
        assert runs[f"up{i}"] == (STEPS if i >= n - 1 - branch else keyframes)
    assert runs["mid"] == keyframes
    if f"downsample{branch}" in runs:
        assert runs[f"downsample{branch}"] == keyframes


@pytest.mark.parametrize("branch", [0, 1, 2])
def test_block_cut_cached_step_is_the_full_unet_with_the_keyframe_deep_feature(tiny_pipe, branch):
    """Checks the skip-connection bookkeeping: a cached forward must equal the unpatched U-Net whose
    feeding module (the one whose output the shallow branch consumes) returns its keyframe output.
    Split CFG (two forwards per step, different conditioning) must keep one cache per branch."""
    unet = tiny_pipe.unet
    n = len(unet.down_blocks)
    feeder = unet.up_blocks[n - 2 - branch] if branch < n - 1 else unet.mid_block
    g = torch.Generator().manual_seed(1)
    x0, x1 = torch.randn(2, 1, 16, 16, generator=g), torch.randn(2, 1, 16, 16, generator=g)
    conds = [torch.randn(2, 4, 32, generator=g), torch.randn(2, 4, 32, generator=g)]  # uncond, cond
    t0, t1 = torch.tensor(900), torch.tensor(700)

    expected = []
    for c in conds:
        saved = []
        h = feeder.register_forward_hook(lambda m, a, o: saved.append(o))
        unet(x0, t0, encoder_hidden_states=c)
        h.remove()
        h = feeder.register_forward_hook(lambda m, a, o: saved[0])
        expected.append(unet(x1, t1, encoder_hidden_states=c).sample)
        h.remove()

    with apply(unet, DeepCacheConfig(interval=2, branch=branch, cut="block")):
        get_step_context(unet).begin([900, 700])
        for c in conds:
            unet(x0, t0, encoder_hidden_states=c)
        got = [unet(x1, t1, encoder_hidden_states=c).sample for c in conds]
    assert torch.equal(got[0], expected[0]) and torch.equal(got[1], expected[1])


def test_nonuniform_schedule_is_denser_around_center():
    for steps, interval in [(50, 2), (50, 3), (50, 5), (50, 10), (20, 3)]:
        keys = nonuniform_keyframes(steps, interval, 15, 1.4)
        assert len(keys) == math.ceil(steps / interval) == len(range(0, steps, interval))
        assert keys[0] == 0 and list(keys) == sorted(set(keys)) and keys[-1] < steps
    keys = nonuniform_keyframes(50, 5, 15, 2.0)
    gaps = {k: b - a for a, b in zip(keys, keys[1:]) for k in (a,)}
    near = [g for k, g in gaps.items() if abs(k - 15) <= 5]
    far = [g for k, g in gaps.items() if k >= 30]
    assert max(near) < min(far)
    assert nonuniform_keyframes(10, 1, 3, 1.4) == tuple(range(10))


def test_nonuniform_keyframes_drive_the_pipeline(tiny_pipe):
    steps, cfg = 20, DeepCacheConfig(interval=4, schedule="nonuniform", center=6, power=2.0)
    ctx = get_step_context(tiny_pipe.unet)
    seen = []
    conv = tiny_pipe.unet.mid_block.resnets[0].conv1
    with apply(tiny_pipe, cfg):
        h = conv.register_forward_hook(lambda *a: seen.append(ctx.step))
        tiny_pipe([1], [0], num_inference_steps=steps)
        h.remove()
    assert tuple(seen) == nonuniform_keyframes(steps, 4, 6, 2.0)


def test_sd15_unet_two_steps(sd15_unet):
    with pytest.raises(TunerError, match=r"0\.\.3"):
        apply(sd15_unet, DeepCacheConfig(branch=4, cut="block"))
    with pytest.raises(TunerError, match=r"0\.\.11"):  # DeepCache's SD-1.5 ids: 4 blocks x 3 layers
        apply(sd15_unet, DeepCacheConfig(branch=12))
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 4, 8, 8, generator=g)
    text = torch.randn(2, 77, 768, generator=g)
    mid_runs = []
    h = sd15_unet.mid_block.resnets[0].conv1.register_forward_hook(lambda *a: mid_runs.append(1))
    try:
        with torch.no_grad(), apply(sd15_unet, DeepCacheConfig(interval=2, branch=0)):
            get_step_context(sd15_unet).begin([999, 500])
            full = sd15_unet(x, 999, encoder_hidden_states=text).sample
            cached = sd15_unet(x, 500, encoder_hidden_states=text).sample
    finally:
        h.remove()
    assert len(mid_runs) == 1
    assert cached.shape == full.shape == x.shape and torch.isfinite(cached).all()


# --- layer cut: DeepCache's own cache_branch_id ------------------------------------------------------
def test_layer_cut_branch0_runs_only_the_outermost_layers_on_cached_steps(tiny_pipe):
    """Branch 0 = block 0, layer 0: on cached steps only conv_in, the last up layer (resnet + attention)
    and conv_out run; everything else is the keyframe's."""
    unet = tiny_pipe.unet
    last_up = unet.up_blocks[-1]
    running = {"conv_in": unet.conv_in, "last_resnet": last_up.resnets[-1], "last_attn": last_up.attentions[-1],
               "conv_out": unet.conv_out}
    skipped = {"first_down_resnet": unet.down_blocks[0].resnets[0], "down0_downsample": unet.down_blocks[0].downsamplers[0],
               "mid": unet.mid_block, "up_first_resnet_of_last": last_up.resnets[0],
               "up_attn_first_of_last": last_up.attentions[0], "up1": unet.up_blocks[1]}
    calls = {k: 0 for k in {**running, **skipped}}
    hooks = []
    for k, m in {**running, **skipped}.items():
        leaf = next((c for c in m.modules() if isinstance(c, (torch.nn.Conv2d, torch.nn.Linear))), m)
        hooks.append(leaf.register_forward_hook(lambda *a, k=k: calls.__setitem__(k, calls[k] + 1)))
    with apply(tiny_pipe, DeepCacheConfig(interval=3, branch=0)):
        run(tiny_pipe)
    for h in hooks:
        h.remove()
    for k in running:
        assert calls[k] == STEPS, k
    for k in skipped:
        assert calls[k] == 3, k  # keyframes 0, 3, 6 of 9


@pytest.mark.parametrize("branch", range(8))
def test_layer_cut_reproduces_the_deepcache_package_on_the_proxy(tiny_pipe, branch):
    """DeepCacheSDHelper only needs `pipe.unet` and `pipe.scheduler.timesteps`, so it runs on our pipeline
    as is: same seeds, same images (it wraps module forwards; we hook the cut modules)."""
    helper_cls = pytest.importorskip("DeepCache").DeepCacheSDHelper
    base = run(tiny_pipe)
    helper = helper_cls(pipe=tiny_pipe)
    helper.set_params(cache_interval=3, cache_branch_id=branch)
    helper.enable()
    peer = run(tiny_pipe)
    helper.disable()
    with apply(tiny_pipe, DeepCacheConfig(interval=3, branch=branch)):
        ours = run(tiny_pipe)
    assert not torch.equal(peer, base)
    assert (ours - peer).abs().max().item() <= 1e-4
    assert torch.equal(run(tiny_pipe), base)


@pytest.fixture
def sd_pipe(tmp_path):
    pytest.importorskip("transformers")
    from tiny_sd import tiny_sd_pipeline

    return tiny_sd_pipeline(tmp_path)


@pytest.mark.parametrize("interval,branch", [(1, 0), (2, 0), (3, 0), (3, 2), (5, 4), (3, 5)])
def test_layer_cut_reproduces_the_deepcache_package_on_a_diffusers_pipeline(sd_pipe, interval, branch):
    from tiny_sd import generate

    helper_cls = pytest.importorskip("DeepCache").DeepCacheSDHelper
    base = generate(sd_pipe)
    helper = helper_cls(pipe=sd_pipe)
    helper.set_params(cache_interval=interval, cache_branch_id=branch)
    helper.enable()
    peer = generate(sd_pipe)
    helper.disable()
    with apply(sd_pipe, DeepCacheConfig(interval=interval, branch=branch)):
        ours, again = generate(sd_pipe), generate(sd_pipe)
    assert (ours - peer).abs().max().item() <= 1e-4
    assert torch.equal(ours, again)  # a second call in a row starts from a clean cache
    if interval == 1:
        assert torch.equal(ours, base)
    assert torch.equal(generate(sd_pipe), base)


def test_nonuniform_on_a_diffusers_pipeline_reads_each_calls_step_count(sd_pipe):
    """No tuner pipeline announces the timesteps here: the count comes from the scheduler, per call."""
    from tiny_sd import generate

    ctx = get_step_context(sd_pipe.unet)
    conv = sd_pipe.unet.mid_block.resnets[0].conv1
    cfg = DeepCacheConfig(interval=3, schedule="nonuniform", center=2, power=2.0)
    with apply(sd_pipe, cfg):
        for steps in (9, 12, 9):
            seen = []
            h = conv.register_forward_hook(lambda *a: seen.append(ctx.step))
            generate(sd_pipe, steps=steps)
            h.remove()
            assert tuple(seen) == nonuniform_keyframes(steps, 3, 2, 2.0)


def test_step_count_unknowable_is_refused_at_apply(tiny_pipe):
    from types import SimpleNamespace

    other = SimpleNamespace(unet=tiny_pipe.unet)  # has a U-Net, tells no step count
    with pytest.raises(TunerError, match="number of steps"):
        apply(other, DeepCacheConfig(schedule="nonuniform"))
    apply(other, DeepCacheConfig()).remove()  # uniform needs no count


@pytest.mark.parametrize("block_branch", [0, 1, 2])
def test_block_cut_is_a_layer_cut_id(tiny_pipe, block_branch):
    """Block branch b skips what layer id 3b + L skips (L = resnets per down block, 1 here): the block cut
    adds no point to the space, it only keeps schema-1 configs meaning what they meant."""
    with apply(tiny_pipe, DeepCacheConfig(interval=3, branch=block_branch, cut="block")):
        block = run(tiny_pipe)
    with apply(tiny_pipe, DeepCacheConfig(interval=3, branch=3 * block_branch + 1)):
        layer = run(tiny_pipe)
    assert torch.equal(block, layer)


def test_schema1_configs_keep_the_block_cut():
    v1 = AccelConfig.from_dict({"schema_version": 1, "methods": {"deepcache": {"interval": 3, "branch": 1}}})
    v2 = AccelConfig.from_dict({"schema_version": 2, "methods": {"deepcache": {"interval": 3, "branch": 1}}})
    assert v1.methods["deepcache"].cut == "block" and v2.methods["deepcache"].cut == "layer"
