"""The fused backends against each other and against independent oracles: the gradient of max(i, 0)
at i = 0, the Triton kernels in float32, the precision policy, and tracing by torch.compile."""

import itertools

import pytest
import torch
from spikingjelly.activation_based import functional

from devices import DEVICE, FUSED
from ilif.models import create_model
from ilif.neurons import CLIF, FAMILIES, ILIF, LIF, NeuronParams, NeuronState, Surrogate, multistep
from ilif.neurons.surrogate import SIGMOID_FWHM

ALL_BACKENDS = (*FUSED, "reference")


class _ReleaseClamp(torch.autograd.Function):
    """max(i, 0) with the derivative written out: 1[i ≥ 0] (the release's torch) or 1[i > 0]."""

    @staticmethod
    def forward(ctx, i, grad_at_zero):
        ctx.save_for_backward(i)
        ctx.grad_at_zero = grad_at_zero
        return torch.where(i > 0, i, torch.zeros_like(i))

    @staticmethod
    def backward(ctx, grad):
        (i,) = ctx.saved_tensors
        passes = (i > 0) | ((i == 0) & (ctx.grad_at_zero == 1.0))
        return grad * passes.to(grad.dtype), None


class _SigmoidSpike(torch.autograd.Function):
    """Θ(z) forward, α·σ(αz)(1 − σ(αz)) backward with α = 4 (spikingjelly's Sigmoid, the release's default)."""

    @staticmethod
    def forward(ctx, z):
        ctx.save_for_backward(z)
        return (z >= 0).to(z.dtype)

    @staticmethod
    def backward(ctx, grad):
        (z,) = ctx.saved_tensors
        sg = torch.sigmoid(4.0 * z)
        return grad * 4.0 * sg * (1.0 - sg)


def _release_ilif(x_seq, tau, grad_at_zero, kc=0.03, km=1.0):
    """The release's ILIF step by step from its own description (soft reset, V_th = 1, nothing detached):
    i = κ_I(i + x_prev·s_prev), h = λv + x − max(i, 0), s = Θ(h − 1), u = h − s, m = κ_M(m + s·u),
    v = u − s·σ(m). x_seq [T, ...] -> spikes [T, ...]."""
    lam = 1.0 - 1.0 / tau
    v = i = m = x_prev = s_prev = torch.zeros_like(x_seq[0])
    spikes = []
    for x in x_seq:
        i = kc * (i + x_prev * s_prev)
        h = lam * v + x - _ReleaseClamp.apply(i, grad_at_zero)
        s = _SigmoidSpike.apply(h - 1.0)
        u = h - s
        m = km * (m + s * u)
        v = u - s * torch.sigmoid(m)
        x_prev, s_prev = x, s
        spikes.append(s)
    return torch.stack(spikes)


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("grad_at_zero", [1.0, 0.0])
def test_clamp_grad_at_zero_matches_an_independent_release_step(backend, grad_at_zero):
    gen = torch.Generator().manual_seed(7)
    x = (torch.randn(6, 4, 50, generator=gen, dtype=torch.float64) * 0.8 + 0.5).to(DEVICE).requires_grad_()
    weights = torch.randn(6, 4, 50, generator=gen, dtype=torch.float64).to(DEVICE)
    ref = _release_ilif(x, tau=1.1, grad_at_zero=grad_at_zero)
    (g_ref,) = torch.autograd.grad((ref * weights).sum(), x)
    neuron = ILIF(tau=1.1, surrogate=Surrogate("sigmoid", SIGMOID_FWHM / 4.0), step_mode="m", backend=backend,
                  clamp_grad_at_zero=grad_at_zero)
    out = neuron(x)
    (g_ours,) = torch.autograd.grad((out * weights).sum(), x)
    assert torch.equal(out, ref)
    torch.testing.assert_close(g_ours, g_ref, rtol=1e-12, atol=1e-12)


def test_clamp_grad_at_zero_changes_the_gradient_and_only_it():
    x = (torch.randn(6, 4, 50, dtype=torch.float64, device=DEVICE) * 0.8 + 0.5).requires_grad_()
    outs = {c: ILIF(tau=1.1, step_mode="m", clamp_grad_at_zero=c)(x) for c in (1.0, 0.0)}
    grads = {c: torch.autograd.grad(out.sum(), x)[0] for c, out in outs.items()}
    assert torch.equal(outs[1.0], outs[0.0])
    assert (grads[1.0] != grads[0.0]).any()


@pytest.mark.parametrize("value", [0.5, -1.0, True, float("nan")])
def test_clamp_grad_at_zero_allows_only_zero_or_one(value):
    with pytest.raises(ValueError, match="clamp_grad_at_zero=.* is not allowed: choose 1.0"):
        ILIF(clamp_grad_at_zero=value)


KERNEL_CASES = list(itertools.product([1, 7], [False, True], [False, True], ["soft", "hard"], FAMILIES, [False, True]))


@pytest.mark.skipif("triton" not in FUSED, reason="Triton is not available")
@pytest.mark.parametrize("T, current, membrane, reset, family, detach", KERNEL_CASES)
def test_triton_equals_other_backends_in_float32(T, current, membrane, reset, family, detach):
    gen = torch.Generator().manual_seed(T * 100 + current * 10 + membrane + FAMILIES.index(family) * 1000)
    params = NeuronParams(tau=1.7, reset=reset, detach_reset=detach, surrogate=Surrogate(family, 1.3),
                          current_inhibition=current, membrane_inhibition=membrane, kappa_current=0.3,
                          kappa_membrane=0.8)
    shape = (T, 3, 301)  # N = 903: several blocks and a masked tail
    x0 = (torch.randn(shape, generator=gen) * 1.5 + 0.4).to(DEVICE)
    state0 = [torch.randn(shape[1:], generator=gen).mul_(0.5).to(DEVICE) for _ in range(4)]
    weights = [torch.randn(shape, generator=gen).to(DEVICE)] + [torch.randn(shape[1:], generator=gen).to(DEVICE)
                                                                 for _ in range(4)]
    results = {}
    for backend in ("triton", *(b for b in ALL_BACKENDS if b != "triton")):
        x = x0.clone().requires_grad_()
        state = NeuronState(*(t.clone().requires_grad_() for t in state0))
        spikes, final, _ = multistep(x, state, params, backend=backend)
        objective = (spikes * weights[0]).sum() + sum((f * w).sum() for f, w in zip(final, weights[1:]))
        results[backend] = (spikes, torch.autograd.grad(objective, [x, *state]))
    spikes, grads = results.pop("triton")
    for backend, (other_spikes, other_grads) in results.items():
        assert torch.equal(spikes, other_spikes), backend
        for ours, theirs in zip(grads, other_grads):
            scale = theirs.abs().max().item()  # float32 rounding is relative to the gradient's scale
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-6 * max(scale, 1.0),
                                       msg=lambda m: f"{backend}: {m}")


RECOMPUTE_CASES = list(itertools.product(FUSED, [False, True], [False, True], ["soft", "hard"], [False, True],
                                         [torch.float32, torch.float64]))


@pytest.mark.parametrize("backend, current, membrane, reset, detach, dtype", RECOMPUTE_CASES)
def test_recomputing_in_the_backward_gives_the_gradients_bit_for_bit(backend, current, membrane, reset, detach,
                                                                     dtype):
    """recompute=True (trainer.memory=lean) keeps x and the initial state where the op kept h, m_seq and
    i_grad: the same spikes and the same gradients of x, of a given or zero initial state, of a learnable
    γ and of the spike count, in float32 and float64."""
    from ilif.neurons.functional import multistep_with_count

    gen = torch.Generator().manual_seed(current * 10 + membrane + detach * 100)
    shape = (5, 3, 67)
    x0 = (torch.randn(shape, generator=gen, dtype=dtype) * 1.5 + 0.4).to(DEVICE)
    state0 = [torch.randn(shape[1:], generator=gen, dtype=dtype).mul_(0.5).to(DEVICE) for _ in range(4)]
    weights = [torch.randn(shape, generator=gen, dtype=dtype).to(DEVICE)] + \
        [torch.randn(shape[1:], generator=gen, dtype=dtype).to(DEVICE) for _ in range(4)]
    for given in (True, False):
        results = []
        for recompute in (False, True):
            gamma = torch.tensor(1.3, dtype=torch.float64, requires_grad=True)
            params = NeuronParams(tau=1.7, reset=reset, detach_reset=detach,
                                  surrogate=Surrogate("sigmoid", 1.3, parameter=gamma), current_inhibition=current,
                                  membrane_inhibition=membrane, kappa_current=0.3, kappa_membrane=0.8)
            x = x0.clone().requires_grad_()
            state = NeuronState(*(t.clone().requires_grad_() for t in state0)) if given else None
            spikes, final, _, count = multistep_with_count(x, state, params, backend, recompute=recompute)
            objective = (spikes * weights[0]).sum() + sum((f * w).sum() for f, w in zip(final, weights[1:])) \
                + 0.01 * count
            leaves = [x, gamma, *(state if given else ())]
            results.append((spikes, torch.autograd.grad(objective, leaves)))
        (spikes, grads), (again, regrads) = results
        assert torch.equal(spikes, again)
        assert all(torch.equal(a, b) for a, b in zip(grads, regrads)), given


@pytest.mark.parametrize("backend", ALL_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_input_spikes_equal_the_float32_spikes(backend, dtype):
    x_low = (torch.randn(8, 16, 40, device=DEVICE) * 1.2 + 0.5).to(dtype).requires_grad_()
    x32 = x_low.detach().float().requires_grad_()
    weights = torch.randn(8, 16, 40, device=DEVICE).to(dtype).float()  # the same cotangent in both dtypes
    outs = []
    for x in (x_low, x32):
        neuron = ILIF(step_mode="m", backend=backend, surrogate=Surrogate("atan", 0.7))
        out = neuron(x)
        outs.append((out, torch.autograd.grad((out * weights).sum(), x)[0], neuron.v))
    (s_low, g_low, v_low), (s32, g32, v32) = outs
    assert s_low.dtype == dtype and g_low.dtype == dtype
    assert v_low.dtype == torch.float32
    assert torch.equal(s_low.float(), s32)
    assert torch.equal(v_low, v32)
    assert torch.equal(g_low, g32.to(dtype))


@pytest.mark.parametrize("backend", FUSED)
def test_float64_input_keeps_a_float64_state(backend):
    neuron = ILIF(step_mode="m", backend=backend)
    out = neuron(torch.randn(3, 5, dtype=torch.float64, device=DEVICE))
    assert out.dtype == torch.float64 and neuron.v.dtype == torch.float64 and neuron.m.dtype == torch.float64


def test_integer_input_is_a_clear_error():
    with pytest.raises(ValueError, match="neuron input dtype int64 is not allowed: use one of float16, bfloat16"):
        ILIF(step_mode="m")(torch.ones(2, 3, dtype=torch.long, device=DEVICE))


@pytest.mark.skipif(DEVICE.type != "cpu", reason="checks the CPU-only refusal")
def test_triton_backend_on_a_cpu_tensor_needs_the_interpreter(monkeypatch):
    from ilif.neurons import _triton_kernel

    monkeypatch.setattr(_triton_kernel, "INTERPRET", False)  # as imported without TRITON_INTERPRET=1
    with pytest.raises(ValueError,
                       match=r"^backend='triton' needs a CUDA tensor; got one on cpu \(set TRITON_INTERPRET"):
        LIF(step_mode="m", backend="triton")(torch.ones(2, 3))


def _network(model: str, neuron_cls):
    torch.manual_seed(0)
    net = create_model(model, lambda: neuron_cls(tau=1.1, step_mode="m"), num_classes=10, in_channels=3, T=2)
    return net.to(DEVICE)


@pytest.mark.parametrize("neuron_cls, model, size", [(LIF, "convnet_small", 8), (ILIF, "convnet_small", 8),
                                                     (ILIF, "preact_resnet18", 32), (CLIF, "convnet_small", 8)])
def test_compile_traces_a_whole_network_without_graph_breaks(neuron_cls, model, size):
    net = _network(model, neuron_cls)
    x = torch.randn(2, 3, size, size, device=DEVICE)

    def step(inp):
        functional.reset_net(net)
        return net(inp).sum()

    explanation = torch._dynamo.explain(step)(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1


@pytest.mark.parametrize("memory", ["standard", "lean"])
@pytest.mark.parametrize("neuron_cls", [LIF, ILIF])
def test_compiled_network_matches_eager_forward_and_backward(neuron_cls, memory):
    from ilif.train.build import set_memory

    net = _network("convnet_small", neuron_cls)
    set_memory(net, memory)
    x = torch.randn(3, 3, 8, 8, device=DEVICE)

    def loss_and_grads(module):
        functional.reset_net(net)
        loss = module(x).square().mean()
        return loss, torch.autograd.grad(loss, list(net.parameters()))

    eager_loss, eager_grads = loss_and_grads(net)
    torch._dynamo.reset()
    compiled_loss, compiled_grads = loss_and_grads(torch.compile(net, backend="aot_eager", fullgraph=True))
    assert torch.equal(eager_loss, compiled_loss)
    for eager, compiled in zip(eager_grads, compiled_grads):
        assert torch.equal(eager, compiled)
