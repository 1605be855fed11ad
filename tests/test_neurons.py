import itertools

import pytest
import torch
from spikingjelly.activation_based import functional, layer
from spikingjelly.activation_based import neuron as sj_neuron
from spikingjelly.activation_based import surrogate as sj_surrogate

from devices import DEVICE, FUSED
from ilif.neurons import FAMILIES, ILIF, LIF, PLIF, NeuronParams, NeuronState, Surrogate, multistep, step
from ilif.neurons.surrogate import SIGMOID_FWHM

# Hand trace of docs/neuron.md: tau = 2, constant input 1.0.
HAND_TRACE = [  # t, h, s, v, m, i
    (1, 1.0, 1, -0.5, 0.0, 0.0),
    (2, 0.72, 0, 0.72, 0.0, 0.03),
    (3, 1.3591, 1, -0.2297, 0.3591, 0.0009),
    (4, 0.8551, 0, 0.8551, 0.3591, 0.03),
]
RATE_TABLE = [  # tau, x, LIF rate, ILIF rate over 20 steps
    (2.0, 0.6, 0.30, 0.25),
    (2.0, 1.0, 1.00, 0.50),
    (2.0, 1.5, 1.00, 1.00),
    (1.1, 1.0, 1.00, 0.50),
    (1.1, 0.6, 0.00, 0.00),
]
ILIF_PARAMS = dict(current_inhibition=True, membrane_inhibition=True)


def _trace_rows(x_seq, states, h_seq):
    return [
        (t + 1, round(h_seq[t].item(), 4), int(s.item()), round(st.v.item(), 4), round(st.m.item(), 4),
         round(st.i.item(), 4))
        for t, (s, st) in enumerate(states)
    ]


def test_hand_trace_functional_step():
    params = NeuronParams(tau=2.0, **ILIF_PARAMS)
    state, rows = None, []
    for t in range(4):
        x = torch.ones(1, dtype=torch.float64, device=DEVICE)
        h = params.decay * (state.v if state else 0.0) + x - (
            torch.clamp(params.kappa_current * (state.i + state.xs), min=0) if state else 0.0)
        s, state = step(x, state, params)
        rows.append((t + 1, round(h.item(), 4), int(s.item()), round(state.v.item(), 4),
                     round(state.m.item(), 4), round(state.i.item(), 4)))
    assert rows == HAND_TRACE


@pytest.mark.parametrize("backend", FUSED)
def test_hand_trace_fused_module(backend):
    neuron = ILIF(tau=2.0, step_mode="s", store_membrane=True, backend=backend)
    rows = []
    for t in range(4):
        s = neuron(torch.ones(1, dtype=torch.float64, device=DEVICE))
        rows.append((t + 1, round(neuron.h_seq[0].item(), 4), int(s.item()), round(neuron.v.item(), 4),
                     round(neuron.m.item(), 4), round(neuron.i.item(), 4)))
    assert rows == HAND_TRACE


@pytest.mark.parametrize("tau, x, lif_rate, ilif_rate", RATE_TABLE)
@pytest.mark.parametrize("backend", FUSED)
def test_firing_rate_table(tau, x, lif_rate, ilif_rate, backend):
    inputs = torch.full((20, 1), x, device=DEVICE)
    for cls, rate in ((LIF, lif_rate), (ILIF, ilif_rate)):
        spikes = cls(tau=tau, step_mode="m", backend=backend)(inputs)
        assert spikes.sum().item() == round(rate * 20)


def _naive_sequence(x_seq, state, params):
    spikes = []
    for t in range(x_seq.shape[0]):
        s, state = step(x_seq[t], state, params)
        spikes.append(s)
    return torch.stack(spikes), state


def _objective(spikes, state, weights):
    return (spikes * weights[0]).sum() + sum((st * w).sum() for st, w in zip(state, weights[1:]))


CASES = list(itertools.product([1, 2, 5, 16], [False, True], [False, True], ["soft", "hard"], FAMILIES, [False, True]))


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("T, current, membrane, reset, family, detach", CASES)
def test_fused_equals_naive_autograd(backend, T, current, membrane, reset, family, detach):
    gen = torch.Generator().manual_seed(T * 1000 + current * 100 + membrane * 10 + FAMILIES.index(family))
    params = NeuronParams(tau=1.7, reset=reset, detach_reset=detach, surrogate=Surrogate(family, 1.3),
                          current_inhibition=current, membrane_inhibition=membrane, kappa_current=0.3,
                          kappa_membrane=0.8)
    shape = (T, 3, 4)
    x = (torch.randn(shape, generator=gen, dtype=torch.float64) * 1.5 + 0.4).to(DEVICE).requires_grad_()
    state0 = NeuronState(*(torch.randn(shape[1:], generator=gen, dtype=torch.float64).mul_(0.5).to(DEVICE)
                           .requires_grad_() for _ in range(4)))
    weights = [torch.randn(shape, generator=gen, dtype=torch.float64).to(DEVICE)] + [
        torch.randn(shape[1:], generator=gen, dtype=torch.float64).to(DEVICE) for _ in range(4)]
    leaves = [x, *state0]

    ref_spikes, ref_state = _naive_sequence(x, state0, params)
    ref_grads = torch.autograd.grad(_objective(ref_spikes, ref_state, weights), leaves, allow_unused=True)
    spikes, state, _ = multistep(x, state0, params, backend=backend)
    grads = torch.autograd.grad(_objective(spikes, state, weights), leaves, allow_unused=True)

    assert torch.equal(spikes, ref_spikes)
    for ours, ref in zip(state, ref_state):
        torch.testing.assert_close(ours, ref, rtol=1e-12, atol=1e-12)
    for name, ours, ref in zip(["x", "v0", "i0", "m0", "xs0"], grads, ref_grads):
        ref = torch.zeros_like(ours) if ref is None else ref
        torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10, msg=lambda m: f"grad {name}: {m}")


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("cls", [LIF, ILIF])
def test_single_step_equals_multi_step_bit_for_bit(backend, cls):
    x = (torch.randn(6, 4, 3, 5, device=DEVICE) + 0.5).requires_grad_()
    weights = torch.randn(6, 4, 3, 5, device=DEVICE)
    multi = cls(tau=2.0, step_mode="m", backend=backend)
    single = cls(tau=2.0, step_mode="s", backend=backend)
    out_m = multi(x)
    (grad_m,) = torch.autograd.grad((out_m * weights).sum() + multi.v.sum(), x)
    out_s = torch.stack([single(x[t]) for t in range(6)])
    (grad_s,) = torch.autograd.grad((out_s * weights).sum() + single.v.sum(), x)
    assert torch.equal(out_m, out_s)
    for name in cls.memory_names:
        assert torch.equal(getattr(multi, name), getattr(single, name)), name
    assert torch.equal(grad_m, grad_s)


@pytest.mark.parametrize("backend", FUSED)
def test_ilif_with_both_units_off_is_lif(backend):
    x = (torch.randn(8, 16, 10, device=DEVICE) + 0.3).requires_grad_()
    out_lif = LIF(tau=1.5, step_mode="m", backend=backend)(x)
    (g_lif,) = torch.autograd.grad(out_lif.sum(), x)
    out_off = ILIF(tau=1.5, step_mode="m", backend=backend, current_inhibition=False, membrane_inhibition=False)(x)
    (g_off,) = torch.autograd.grad(out_off.sum(), x)
    assert torch.equal(out_lif, out_off)
    assert torch.equal(g_lif, g_off)


def test_backends_agree_in_float32():
    x = torch.randn(10, 64, 33, device=DEVICE) + 0.4
    outs = []
    for backend in FUSED:
        xx = x.clone().requires_grad_()
        out = ILIF(step_mode="m", backend=backend, surrogate=Surrogate("sigmoid", 1.0))(xx)
        outs.append((out, torch.autograd.grad(out.sum(), xx)[0]))
    for out, grad in outs[1:]:
        assert torch.equal(outs[0][0], out)
        torch.testing.assert_close(outs[0][1], grad, rtol=1e-5, atol=1e-6)


SJ_SURROGATES = {
    "rectangle": sj_surrogate.Rect, "triangle": sj_surrogate.PiecewiseQuadratic,
    "sigmoid": sj_surrogate.Sigmoid, "atan": sj_surrogate.ATan,
}


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("reset", ["soft", "hard"])
def test_lif_equals_spikingjelly_lifnode(family, reset):
    sg = Surrogate(family, 0.8)
    x = (torch.randn(8, 32, 50, device=DEVICE) * 0.8 + 0.4).requires_grad_()
    ours = LIF(tau=2.0, reset=reset, surrogate=sg, step_mode="m")
    theirs = sj_neuron.LIFNode(tau=2.0, decay_input=False, v_reset=None if reset == "soft" else 0.0,
                               surrogate_function=SJ_SURROGATES[family](alpha=sg.alpha), step_mode="m")
    weights = torch.randn_like(x)
    out_ours = ours(x)
    (g_ours,) = torch.autograd.grad((out_ours * weights).sum(), x)
    out_theirs = theirs(x)
    (g_theirs,) = torch.autograd.grad((out_theirs * weights).sum(), x)
    torch.testing.assert_close(out_ours, out_theirs, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.v, theirs.v, rtol=0, atol=1e-6)
    torch.testing.assert_close(g_ours, g_theirs, rtol=1e-6, atol=1e-6)


def test_reset_net_and_spikingjelly_network():
    net = torch.nn.Sequential(layer.Linear(6, 5), ILIF(tau=2.0), layer.Linear(5, 3), LIF(tau=2.0)).to(DEVICE)
    functional.set_step_mode(net, "m")
    assert net[1].step_mode == "m"
    x = torch.rand(4, 2, 6, device=DEVICE) * 3
    first = net(x)
    v_first = net[1].v.clone()
    net(x)
    assert not torch.equal(net[1].v, v_first)  # state carried over between calls
    functional.reset_net(net)
    assert all(isinstance(net[1].__getattr__(k), float) for k in ILIF.memory_names)
    assert torch.equal(net(x), first)
    assert torch.equal(net[1].v, v_first)


def test_store_membrane_is_off_by_default_and_exact_when_on():
    x = torch.randn(5, 7, dtype=torch.float64, device=DEVICE) + 0.8
    assert ILIF(step_mode="m")(x) is not None
    neuron = ILIF(step_mode="m", store_membrane=True)
    neuron(x)
    state, h_ref = None, []
    params = neuron.params
    for t in range(5):
        h = params.decay * (state.v if state else 0) + x[t] - (
            torch.clamp(params.kappa_current * (state.i + state.xs), min=0) if state else 0)
        h_ref.append(h)
        _, state = step(x[t], state, params)
    torch.testing.assert_close(neuron.h_seq, torch.stack(h_ref), rtol=1e-12, atol=1e-12)
    assert LIF(step_mode="m").h_seq is None


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"tau": 1.0}, "tau=1.0 .*> 1"), ({"tau": 0.5}, "tau"), ({"tau": float("nan")}, "tau"),
        ({"kappa_current": float("nan")}, "kappa_current"), ({"kappa_membrane": float("inf")}, "kappa_membrane"),
        ({"kappa_current": -0.1}, "kappa_current"), ({"reset": "zero"}, "reset"),
        ({"v_threshold": 0.0}, "v_threshold"), ({"step_mode": "x"}, "step_mode"),
    ],
)
def test_bad_parameters_raise(kwargs, words):
    with pytest.raises(ValueError, match=words):
        ILIF(**kwargs)


def test_multi_step_input_needs_two_dims():
    with pytest.raises(ValueError, match=r"multi-step input must have shape \[T, B, ...\]"):
        ILIF(step_mode="m")(torch.ones(5))
    with pytest.raises(ValueError, match="multi-step input"):
        multistep(torch.ones(5), None, NeuronParams())


def test_unknown_backend_is_rejected():
    with pytest.raises(ValueError, match="backend"):
        LIF(step_mode="m", backend="cuda-magic")(torch.ones(2, 3))


def test_state_of_another_batch_size_is_a_clear_error():
    neuron = ILIF(step_mode="m")
    neuron(torch.ones(2, 4, 3, device=DEVICE))
    with pytest.raises(ValueError, match=r"neuron state has shape \(4, 3\) .*reset_net"):
        neuron(torch.ones(2, 5, 3, device=DEVICE))


def test_reference_backend_is_the_op_by_op_loop():
    x = (torch.randn(6, 4, 5, dtype=torch.float64, device=DEVICE) + 0.6).requires_grad_()
    fused = ILIF(step_mode="m", surrogate=Surrogate("sigmoid", 1.0))
    loop = ILIF(step_mode="m", surrogate=Surrogate("sigmoid", 1.0), backend="reference", store_membrane=True)
    out_f, out_l = fused(x), loop(x)
    assert torch.equal(out_f, out_l) and loop.h_seq is None
    g_f, g_l = (torch.autograd.grad(o.sum() + n.v.sum(), x)[0] for o, n in ((out_f, fused), (out_l, loop)))
    torch.testing.assert_close(g_f, g_l, rtol=1e-10, atol=1e-10)


def test_plif_is_spikingjelly_parametric_lif_with_our_surrogate():
    sg = Surrogate("sigmoid", SIGMOID_FWHM / 4.0)
    x = (torch.randn(6, 4, 20, device=DEVICE) + 0.6).requires_grad_()
    ours = PLIF(tau=2.0, surrogate=sg, step_mode="m").to(DEVICE)
    theirs = sj_neuron.ParametricLIFNode(init_tau=2.0, surrogate_function=sj_surrogate.Sigmoid(alpha=4.0),
                                         step_mode="m").to(DEVICE)
    out_ours, out_theirs = ours(x), theirs(x)
    g_ours = torch.autograd.grad(out_ours.sum(), [x, ours.w])
    g_theirs = torch.autograd.grad(out_theirs.sum(), [x, theirs.w])
    assert torch.equal(out_ours, out_theirs)
    for a, b in zip(g_ours, g_theirs):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="tau=1.0 is not allowed"):
        PLIF(tau=1.0)


def test_the_kernel_constants_follow_the_layer_and_nothing_else_changes_them():
    """Not a buffer: model.half() and .type() keep them float64, an EMA of the model does not average
    them, .to(device) moves them; a new γ between a forward and its backward leaves that step's as they
    were."""
    from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

    from ilif.neurons import ILIF

    layer = ILIF(step_mode="m", surrogate=Surrogate("atan", 0.7))
    exact = list(layer.params.constant_values())
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(5), layer)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(3):
        ema.update_parameters(net)
    assert ema.module[1].kernel_constants.tolist() == exact and "kernel_constants" not in layer.state_dict()
    for cast in (lambda m: m.half(), lambda m: m.type(torch.float16), lambda m: m.bfloat16(), lambda m: m.float()):
        cast(layer)
        assert layer.kernel_constants.dtype == torch.float64 and layer.kernel_constants.tolist() == exact
    assert ILIF(step_mode="m").to("meta").kernel_constants.device.type == "meta"
    x = torch.randn(3, 2, 5, requires_grad=True)
    spikes = layer(x)
    layer.set_surrogate(Surrogate("atan", 3.0))  # (a schedule between the forward and its backward)
    grad = torch.autograd.grad(spikes.sum(), x)[0]
    reference = ILIF(step_mode="m", surrogate=Surrogate("atan", 0.7))
    assert torch.equal(grad, torch.autograd.grad(reference(x).sum(), x)[0])

