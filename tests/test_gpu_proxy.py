"""The paths only a GPU runs, tested here by their stand-ins: a checkpoint resumed for another device
(``meta``), the Triton kernels under the interpreter on strided inputs, ``torch.library.opcheck`` on
both ops, the kernels compiled for sm_80 and sm_90 without a GPU (registers, spills, 64-bit offsets,
IEEE division), per-launch host-to-device copies, the device guard, one fused finite check per step,
determinism settings, loaders built once, and one compiled training graph per run."""

import json
import os
import random
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from devices import DEVICE, FUSED
from ilif.neurons import FAMILIES, NeuronParams, Surrogate, multistep
from ilif.neurons.functional import kernel_constants
from ilif.train import loop
from ilif.errors import ConfigError
from ilif.train.engine import EpochSampler, EpochSeeded, first_non_finite_grad
from ilif.train.runtime import configure_determinism, deterministic_ops_only

pytestmark = pytest.mark.skipif(DEVICE.type != "cpu", reason="stand-ins for the GPU, run on the CPU")

ILIF_FULL = NeuronParams(tau=1.7, surrogate=Surrogate("sigmoid", 1.3), current_inhibition=True,
                         membrane_inhibition=True, kappa_current=0.3, kappa_membrane=0.8)


# --- resume ------------------------------------------------------------------------------------------------

def _parts(model):

    from ilif.train.remedies import Remedy

    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    return SimpleNamespace(model=model, optimizer=optimizer,
                           scheduler=torch.optim.lr_scheduler.StepLR(optimizer, 2), start_epoch=0, best=None,
                           changed_on_resume=[], epoch_seconds=[], resume_inside=None, data=(range(16),),
                           remedy=Remedy().attach(model, None))


@pytest.mark.filterwarnings("ignore:for .*copying from a non-meta parameter")
def test_resume_for_a_non_cpu_device_restores_every_rng_state_on_the_cpu(tmp_path, trainer_cfg):
    torch.manual_seed(0)
    parts = _parts(torch.nn.Linear(3, 2))
    parts.model(torch.randn(4, 3)).sum().backward()
    parts.optimizer.step()  # momentum buffers in the checkpoint
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    expected = random.getstate(), np.random.get_state()[1].copy(), torch.get_rng_state()
    scaler = torch.amp.GradScaler("cuda", enabled=False)
    on_cpu = SimpleNamespace(scaler=scaler, device=torch.device("cpu"))
    loop.Trainer(trainer_cfg, on_cpu, parts, tmp_path, "h").save(4, False)
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    on_meta = _parts(torch.nn.Linear(3, 2).to("meta"))  # meta stands in for CUDA: nothing can be read back from it
    meta_run = SimpleNamespace(device=torch.device("meta"), scaler=scaler)
    loop.Trainer(trainer_cfg, meta_run, on_meta, tmp_path, "h").resume()
    assert random.getstate() == expected[0]
    assert np.array_equal(np.random.get_state()[1], expected[1])
    assert torch.equal(torch.get_rng_state(), expected[2])
    assert on_meta.start_epoch == 5
    assert next(iter(on_meta.optimizer.state.values()))["momentum_buffer"].device.type == "meta"


# --- the Triton kernels on strided inputs --------------------------------------------------------------------

def _layouts(T=5, N=300):
    """(name, leaf, x [T, ...] made from it): inputs whose memory is not row-major [T, N]."""
    gen = torch.Generator().manual_seed(11)

    def rand(*shape):
        return (torch.randn(*shape, generator=gen, dtype=torch.float64) * 1.5 + 0.4).requires_grad_()

    sliced, expanded, transposed = rand(T, 3, N), rand(N), rand(N, T)
    channels_last = rand(T, 6, 5, 7).detach().to(memory_format=torch.channels_last).requires_grad_()
    return [("sliced", sliced, lambda: sliced[:, 1]),
            ("expanded", expanded, lambda: expanded.expand(T, N)),  # stride 0 over time
            ("transposed", transposed, lambda: transposed.t()),
            ("channels_last", channels_last, lambda: channels_last)]


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("layout", ["sliced", "expanded", "transposed", "channels_last"])
@pytest.mark.parametrize("family", FAMILIES)
def test_fused_backends_on_strided_inputs_equal_the_oracle(backend, layout, family):
    params = ILIF_FULL._replace(surrogate=Surrogate(family, 1.3))
    _, leaf, make = next(item for item in _layouts() if item[0] == layout)
    results = []
    for which in (backend, "reference"):
        spikes, final, _ = multistep(make(), None, params, backend=which)
        weights = torch.linspace(-1, 1, spikes.numel(), dtype=torch.float64).view(spikes.shape)
        objective = (spikes * weights).sum() + final.v.sum() + final.i.sum() * 0.5 + final.m.sum() * 0.3
        results.append((spikes, torch.autograd.grad(objective, leaf)[0]))
    (spikes, grad), (ref_spikes, ref_grad) = results
    assert torch.equal(spikes, ref_spikes)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-10)


# --- opcheck -------------------------------------------------------------------------------------------------

def _op_args(backend: str, transposed: bool, extras: bool, params=ILIF_FULL):
    """The forward op's arguments; ``extras``: a learnable γ, the spike count and recomputing in the backward."""
    T, N = 4, 37
    x = torch.randn(N, T, dtype=torch.float32).t() if transposed else torch.randn(T, N)
    state = [torch.randn(N) * 0.3 for _ in range(4)]
    gamma = torch.tensor(params.surrogate.gamma, requires_grad=True) if extras else torch.empty(0)
    return (x.requires_grad_(), *[s.requires_grad_() for s in state], gamma, kernel_constants(params, x.device),
            *params.kernel_flags(), extras, extras, backend)


@pytest.mark.parametrize("backend", FUSED)
@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("extras", [False, True], ids=["plain", "learnable_gamma_count_recompute"])
def test_opcheck_forward_and_backward_ops(backend, transposed, extras):
    args = _op_args(backend, transposed, extras)
    torch.library.opcheck(torch.ops.ilif.neuron_forward.default, args)
    spikes, h_seq, m_seq, i_grad, *_ = torch.ops.ilif.neuron_forward(*(a.detach() if torch.is_tensor(a) else a
                                                                        for a in args))
    grad_s = torch.randn(spikes.shape[1], spikes.shape[0]).t() if transposed else torch.randn_like(spikes)
    x, states, scalars = args[0].detach(), [a.detach() for a in args[1:5]], args[6:]
    g_sum = torch.tensor(0.3, dtype=torch.float64) if extras else torch.empty(0)
    torch.library.opcheck(torch.ops.ilif.neuron_backward.default,
                          (grad_s, x, h_seq, m_seq, i_grad, *[torch.randn_like(s) for s in states], g_sum, True,
                           *scalars))


# --- the kernels compiled for real GPUs ----------------------------------------------------------------------

def _compiled(which: str) -> list[dict]:
    pytest.importorskip("triton")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    proc = subprocess.run([sys.executable, str(Path(__file__).with_name("triton_targets.py")), which], env=env,
                          capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [json.loads(line) for line in proc.stdout.splitlines()]


def _check_compiled(results: list[dict], expected: int) -> None:
    assert len(results) == expected
    for r in results:
        case = (r["kind"], r["flags"], r["dtype"], r["arch"], r["registers"])
        assert r["spill_bytes"] == 0, case
        assert r["registers"] <= 128, case
        assert r["muls_32bit"] == [], case  # t·N in 64 bits: no wrapped address once T·N passes 2³¹
        assert not r["approx_division"], case
        uses_division = r["flags"].get("MEMBRANE") or r["flags"].get("FAMILY") in (1, 2, 3)
        assert r["ieee_division"] or not uses_division, case


def test_trainer_specialisations_compile_for_sm80_and_sm90():
    _check_compiled(_compiled("subset"), expected=2 * 2 * (2 + 8))  # archs × dtypes × (forward + backward)


@pytest.mark.slow
def test_every_specialisation_compiles_for_sm80_and_sm90():
    _check_compiled(_compiled("all"), expected=2 * 4 * (32 + 256))


# --- launches: no per-call copy, the device guard ------------------------------------------------------------

class _HostTraffic:
    """Counts, while active, the tensors made from Python numbers (each a copy from the host on a GPU)
    and the tensors read back as numbers (each a wait for the GPU)."""

    def __init__(self, monkeypatch):
        self.made, self.read = 0, 0
        tensor, tolist, item = torch.tensor, torch.Tensor.tolist, torch.Tensor.item
        monkeypatch.setattr(torch, "tensor", lambda *a, **k: self._count("made") or tensor(*a, **k))
        monkeypatch.setattr(torch.Tensor, "tolist", lambda t: self._count("read") or tolist(t))
        monkeypatch.setattr(torch.Tensor, "item", lambda t: self._count("read") or item(t))

    def _count(self, what: str) -> None:
        setattr(self, what, getattr(self, what) + 1)


@pytest.mark.skipif("triton" not in FUSED, reason="Triton is not available")
@pytest.mark.parametrize("learnable", [False, True], ids=["fixed_gamma", "learnable_gamma"])
def test_a_step_neither_copies_constants_from_the_host_nor_reads_them_back(monkeypatch, learnable):
    from spikingjelly.activation_based import functional

    from ilif.neurons import ILIF

    layer = ILIF(step_mode="m", backend="triton", surrogate=Surrogate("sigmoid", 1.0, "peak"))
    gammas = torch.ones(1, dtype=torch.float64, requires_grad=True)
    x = torch.randn(3, 2, 25, requires_grad=True)

    def step(value: float) -> None:  # what remedy=learnable_gamma does: γ moved on the device, then published
        if learnable:
            with torch.no_grad():
                gammas.fill_(value)
            layer.set_surrogate(Surrogate("sigmoid", value, "peak", parameter=gammas[0]))
        functional.reset_net(layer)
        layer(x).sum().backward()

    step(1.0)  # the first use of the neuron's own constants
    traffic = _HostTraffic(monkeypatch)
    for value in (0.5, 2.0, 4.0):
        step(value)
    monkeypatch.undo()
    assert (traffic.made, traffic.read) == (0, 0)
    expected = Surrogate("sigmoid", 4.0 if learnable else 1.0, "peak")
    assert layer.kernel_constants[4:].tolist() == list(expected.constant_values())
    if learnable:
        assert gammas.grad is not None and gammas.grad.ne(0).all()


def _bench_kernels():
    import importlib.util

    path = Path(__file__).parents[1] / "scripts" / "bench_kernels.py"
    spec = importlib.util.spec_from_file_location("bench_kernels", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.skipif("triton" not in FUSED, reason="Triton is not available")
def test_the_kernels_move_only_what_they_must():
    """Bytes the Triton kernels load and store in one layer's forward and backward from a zero state,
    counted under the interpreter (the same on a GPU), T = 2, N = 512 (2 programs): x, spikes and h in
    the forward, h, grad_s and grad_x in the backward (4 bytes each per neuron-step), v's final value
    and gz_z (4 per neuron), the constants and the count's gradient (104 per program); ILIF adds m_seq,
    the uint8 mask and x in the backward and its three states. No copy or fill of a state: 2 launches
    for ILIF, one fill more for LIF's absent units. Less than spikingjelly's Triton LIF moves."""
    bench = _bench_kernels()
    T, N = 2, 512
    lif = bench.measure(bench.ours("LIF", torch.float32, "standard", T, N), T, N)
    ilif = bench.measure(bench.ours("ILIF", torch.float32, "standard", T, N), T, N)
    theirs = bench.measure(bench.spikingjelly(torch.float32, T, N), T, N)
    assert lif["bytes"] * T * N == 24 * T * N + 8 * N + 2 * 104
    assert ilif["bytes"] * T * N == (24 + 4 + 1 + 4 + 4 + 1) * T * N + (8 + 4 * 3) * N + 2 * 104
    assert (lif["triton"], lif["torch"], ilif["triton"], ilif["torch"]) == (2, 1, 2, 0)
    assert lif["bytes"] < theirs["bytes"]


@pytest.mark.skipif("triton" not in FUSED, reason="Triton is not available")
def test_every_launch_is_guarded_by_its_tensors_device(monkeypatch):
    from ilif.neurons import _triton_kernel as tk

    guard = tk.device_guard(torch.device("cuda", 1))
    assert isinstance(guard, torch.cuda.device) and guard.idx == 1  # made without touching a GPU
    seen = []
    real = tk.device_guard
    monkeypatch.setattr(tk, "device_guard", lambda device: seen.append(device) or real(device))
    x = torch.randn(2, 10, requires_grad=True)
    multistep(x, None, ILIF_FULL, backend="triton")[0].sum().backward()
    assert seen == [x.device, x.device]  # forward and backward


# --- one finite check per step, determinism -----------------------------------------------------------------

class _OpCount(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.count += 1
        return func(*args, **(kwargs or {}))


def _with_grads(n: int):
    model = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(n)])
    model(torch.randn(2, 4)).sum().backward()
    return model


def test_the_gradient_check_costs_the_same_few_ops_for_any_model_size():
    counts = []
    for n in (2, 20):
        model = _with_grads(n)
        with _OpCount() as ops:
            assert first_non_finite_grad(model.named_parameters()) is None
        counts.append(ops.count)
    assert counts[0] == counts[1]
    model = _with_grads(3)
    model[1].bias.grad[2] = float("nan")
    assert first_non_finite_grad(model.named_parameters()) == "1.bias"
    model[1].bias.grad[2] = 0.0
    model[2].weight.grad[0, 0] = float("-inf")
    assert first_non_finite_grad(model.named_parameters()) == "2.weight"


def test_determinism_settings(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    configure_determinism(False)
    assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
    assert "CUBLAS_WORKSPACE_CONFIG" not in __import__("os").environ
    configure_determinism(True)
    assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
    assert torch.are_deterministic_algorithms_enabled() and not torch.is_deterministic_algorithms_warn_only_enabled()
    assert __import__("os").environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    with pytest.raises(ConfigError, match=r"^trainer.deterministic=True is not allowed: .*put_ has no deterministic "
                                          r"implementation on cpu; set trainer.deterministic=false$"):
        with deterministic_ops_only(True, torch.device("cpu")):
            torch.zeros(3).put_(torch.tensor([0]), torch.tensor([1.0]))
    configure_determinism(False)
    torch.backends.cudnn.deterministic = False


# --- loaders built once ---------------------------------------------------------------------------------------

class _Noisy(torch.utils.data.Dataset):
    """A sample is its index plus a random draw (an augmentation)."""

    def __len__(self):
        return 23

    def __getitem__(self, index):
        return torch.tensor([float(index), torch.rand(()).item()])


def _epoch_batches(loader, sampler, epochs):
    out = []
    for epoch in epochs:
        sampler.set_epoch(epoch)
        out.append([b.clone() for b in loader])
    return out


def test_single_process_orders_equal_a_loader_built_for_each_epoch():
    sampler = EpochSampler(23, seed=3)
    for epoch in (0, 1, 5):
        sampler.set_epoch(epoch)
        generator = torch.Generator().manual_seed(3 * 100_003 + epoch)
        fresh = list(torch.utils.data.DataLoader(range(23), batch_size=23, shuffle=True, generator=generator))
        assert [index for index, _ in sampler] == fresh[0].tolist()


@pytest.mark.parametrize("world", [1, 3])
def test_persistent_workers_resume_an_epoch_exactly(world):
    def loaders():
        samplers = [EpochSampler(23, seed=3, rank=r, world=world) for r in range(world)]
        return samplers, [torch.utils.data.DataLoader(EpochSeeded(_Noisy()), batch_size=4, sampler=s, num_workers=2,
                                                      persistent_workers=True) for s in samplers]

    samplers, long_lived = loaders()
    straight = [_epoch_batches(ld, s, range(3)) for ld, s in zip(long_lived, samplers)]
    samplers, resumed = loaders()
    again = [_epoch_batches(ld, s, [2]) for ld, s in zip(resumed, samplers)]
    for rank in range(world):
        assert all(torch.equal(a, b) for a, b in zip(straight[rank][2], again[rank][0]))
        assert not torch.equal(straight[rank][0][0], straight[rank][1][0])  # another order, other draws
    seen = sorted(int(b[0]) for rank in range(world) for batch in straight[rank][0] for b in batch)
    assert set(seen) == set(range(23)) and len(seen) == -(-23 // world) * world  # padded to equal shards


def test_the_trainer_builds_each_loader_once(train_run, monkeypatch):
    built = []
    real = loop.loader_factory

    def counting(cfg, run):
        loader = real(cfg, run)

        def wrapped(dataset, train, epoch, skip_batches=0):
            out = loader(dataset, train, epoch, skip_batches)
            built.append((train, id(out)))
            return out
        return wrapped

    monkeypatch.setattr(loop, "loader_factory", counting)
    train_run("trainer.progress=false", "trainer.limit_train_batches=2", "trainer.epochs=3")
    assert len({i for train, i in built if train}) == 1 and len({i for train, i in built if not train}) == 1
    assert len(built) == 6


# --- compile: one training graph per run ---------------------------------------------------------------------

def test_compiled_training_makes_one_graph_after_warm_up(train_run, monkeypatch):
    import torch._dynamo

    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kw: real(model, backend="eager", **kw))
    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    run_dir, summary = train_run("trainer.progress=false", "trainer.epochs=2", "trainer.compile=true",
                                 "trainer.batch_size=500")  # digits: 1347 training samples, 2 full batches
    # The step that creates the training meter's counts, then one graph for every later step: no graph
    # for the tail batch (1347 = 2·500 + 347 is dropped under compile), none for evaluation (eager).
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 2
    assert sum(torch._dynamo.utils.counters["graph_break"].values()) == 0
    assert summary.final["epoch"] == 1
    torch._dynamo.reset()


def test_the_gradient_check_takes_parameters_of_several_dtypes():
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4).double())
    model[0].weight.grad = torch.ones(4, 4)
    model[1].weight.grad = torch.ones(4, 4, dtype=torch.float64)
    assert first_non_finite_grad(model.named_parameters()) is None
    model[1].weight.grad[0, 0] = float("nan")
    assert first_non_finite_grad(model.named_parameters()) == "1.weight"
