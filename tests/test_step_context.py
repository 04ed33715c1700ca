import torch

from tuner.step_context import StepContext, get_step_context


class Counter:
    def __init__(self):
        self.resets = 0

    def reset_state(self):
        self.resets += 1


def test_step_advances_on_timestep_change_only():
    ctx = StepContext()
    ctx.begin([900, 600, 300])
    for t in (900, 900, 600, 600, 300):  # CFG split into two forwards counts once
        ctx.observe(t)
    assert ctx.step == 2
    assert ctx.num_steps == 3


def test_new_call_detected_when_timestep_goes_up_and_resets_hooks():
    ctx = StepContext()
    hook = Counter()
    ctx.register(hook)
    for t in (900, 600, 300):
        ctx.observe(t)
    assert hook.resets == 0 and ctx.step == 2
    ctx.observe(900)  # a diffusers pipeline starting again
    assert hook.resets == 1 and ctx.step == 0


def test_explicit_begin_resets(tiny_pipe):
    ctx = get_step_context(tiny_pipe.unet)
    hook = Counter()
    ctx.register(hook)
    tiny_pipe([1, 2], [0, 1], num_inference_steps=3)
    assert ctx.step == 2 and ctx.timesteps == tiny_pipe.timesteps(3)
    assert hook.resets >= 1
    before = hook.resets
    tiny_pipe([1, 2], [0, 1], num_inference_steps=3)
    assert hook.resets == before + 1
    ctx.unregister(hook)


def test_one_context_per_unet(tiny_pipe):
    assert get_step_context(tiny_pipe.unet) is tiny_pipe.step_context


def test_a_repeated_timestep_on_another_input_is_a_new_model_call():
    """Heun evaluates t1 twice on different latents: two steps. Split CFG passes one input twice: one step."""
    ctx = StepContext()
    a, b, c = torch.zeros(1, 2), torch.ones(1, 2), torch.full((1, 2), 2.0)
    for t, x in ((900, a), (600, b), (600, c), (300, c)):
        ctx.observe(t, x)
    assert ctx.step == 3
    ctx.begin(None)
    for t, x in ((900, a), (900, a), (600, b), (600, b.clone())):  # same values: the same step
        ctx.observe(t, x)
    assert ctx.step == 1
