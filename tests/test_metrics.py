import functools
import itertools
import os

import pytest
import torch
import torch.nn.functional as F
from spikingjelly.activation_based import functional
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from ilif.metrics import OpsMeter, SpikeMeter, TemporalGradientMeter, synaptic_ops, weight_grad_norms
from ilif.models import create_model
from ilif.neurons import ILIF, LIF, PLIF, Surrogate


def _toy_inputs():
    # three neurons, T = 4, B = 2: always 1.0 (fires every step), 0 (silent), 0.6 (fires once, at t = 3)
    return torch.tensor([1.0, 0.0, 0.6]).expand(4, 2, 3).clone()


def test_spike_meter_exact_counts():
    net = nn.Sequential(LIF(tau=2.0, step_mode="m", surrogate=Surrogate("rectangle", 1.0)))
    meter = SpikeMeter(net)
    net(_toy_inputs())
    counts = meter.counts["0"]
    assert counts["spikes"].item() == 10
    assert counts["neuron_steps"].item() == 24
    assert counts["per_step_spikes"].tolist() == [2, 2, 4, 2]
    assert counts["neuron_spikes"].tolist() == [8, 0, 2]
    assert counts["in_support"].item() == 16  # |h − 1| ≤ 0.5: always for neurons 0 and 2, never for 1
    summary = meter.summary()
    assert summary["firing_rate"] == 10 / 24
    assert summary["rate_per_step"] == [2 / 6, 2 / 6, 4 / 6, 2 / 6]
    assert summary["silent"] == 1 / 3 and summary["saturated"] == 1 / 3
    assert summary["occupancy"] == 16 / 24
    assert meter.layer_table()[0]["firing_rate"] == 10 / 24


def test_spike_meter_disabled_and_recording():
    net = nn.Sequential(LIF(tau=2.0, step_mode="m"))
    meter = SpikeMeter(net, enabled=False)
    net(_toy_inputs())
    assert meter.counts == {} and net[0].h_seq is None
    with meter.recording():
        net(_toy_inputs())
    assert meter.counts["0"]["spikes"].item() == 10
    assert not meter.enabled


def _eval_model():
    torch.manual_seed(3)
    model = create_model("convnet_small", functools.partial(ILIF, tau=1.5), num_classes=10, in_channels=1, T=4).eval()
    x = torch.randn(8, 1, 8, 8) * 2
    return model, x


def test_counts_add_across_batches():
    model, x = _eval_model()
    whole, halves = SpikeMeter(model, enabled=False), SpikeMeter(model, enabled=False)
    with torch.no_grad(), whole.recording():
        model(x)
    functional.reset_net(model)
    with torch.no_grad(), halves.recording():
        model(x[:3])
        functional.reset_net(model)
        model(x[3:])
    for name in whole.counts:
        for key in whole.counts[name]:
            assert torch.equal(whole.counts[name][key], halves.counts[name][key]), (name, key)
    assert whole.summary() == halves.summary()


def _ddp_worker(rank, world, store, out):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    model, x = _eval_model()
    spikes, ops = SpikeMeter(model), OpsMeter(model)
    with torch.no_grad():
        model(x[:5] if rank == 0 else x[5:])
    spikes.all_reduce()
    ops.all_reduce()
    if rank == 0:
        torch.save({"spikes": spikes.summary(), "ops": ops.report()}, out + ".tmp")
        os.replace(out + ".tmp", out)
    dist.barrier()
    dist.destroy_process_group()


def test_all_reduce_over_two_gloo_ranks_equals_one_process(tmp_path):
    import torch.multiprocessing as mp

    out = tmp_path / "rank0.pt"
    try:
        mp.spawn(_ddp_worker, args=(2, str(tmp_path / "store"), str(out)), nprocs=2, join=True)
    except mp.ProcessExitedException as err:
        # gloo can abort in its own teardown on a loaded machine, after the barrier that follows the
        # reduction and its (atomic) result file: the reduction is what this test checks.
        if not (err.signal_name == "SIGABRT" and out.exists()):
            raise
    reduced = torch.load(out, weights_only=False)
    model, x = _eval_model()
    spikes, ops = SpikeMeter(model), OpsMeter(model)
    with torch.no_grad():
        model(x)
    assert reduced["spikes"] == spikes.summary()
    assert reduced["ops"]["totals"] == pytest.approx(ops.report()["totals"], rel=1e-12)


def _brute_force_conv_sops(layer: nn.Conv2d, x: torch.Tensor) -> float:
    """Σ over output positions and output channels of the input mass in the receptive field (unfold)."""
    cols = F.unfold(x.double(), layer.kernel_size, layer.dilation, layer.padding, layer.stride)  # [N, C·k·k, L]
    per_group = cols.unflatten(1, (layer.groups, -1)).sum(2)  # [N, groups, L]
    return (per_group.sum() * (layer.out_channels // layer.groups)).item()


def test_conv_sops_on_a_hand_spike_map():
    layer = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    spikes = torch.zeros(1, 1, 4, 4)
    spikes[0, 0, 0, 0] = spikes[0, 0, 1, 2] = spikes[0, 0, 3, 3] = 1
    # fan-out of a spike = output positions whose 3×3 window covers it × 2 channels: corner 4, inner 9
    assert synaptic_ops(layer, spikes).item() == (4 + 9 + 4) * 2


@pytest.mark.parametrize("stride, padding, dilation, groups", list(itertools.product([1, 2], [0, 1], [1, 2], [1, 2])))
def test_conv_sops_match_unfold(stride, padding, dilation, groups):
    layer = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, dilation=dilation, groups=groups)
    x = (torch.rand(3, 4, 9, 9) < 0.3).float()
    assert synaptic_ops(layer, x).item() == _brute_force_conv_sops(layer, x)


def test_energy_of_a_toy_network():
    class Toy(nn.Module):
        def __init__(self):
            super().__init__()
            self.encoder = nn.Conv2d(1, 1, 1, bias=False)
            self.conv = nn.Conv2d(1, 2, 3, padding=1, bias=False)
            self.fc = nn.Linear(16, 5)

        def forward(self, x):
            spikes = (self.encoder(x) > 0.5).float()
            self.conv(spikes)
            return self.fc(spikes.flatten(1))

    toy = Toy()
    nn.init.ones_(toy.encoder.weight)
    meter = OpsMeter(toy)
    image = torch.zeros(1, 1, 4, 4)
    image[0, 0, 0, 0] = image[0, 0, 1, 2] = image[0, 0, 3, 3] = 1
    toy(image)
    report = meter.report(e_mac_pj=4.6, e_ac_pj=0.9)
    rows = {r["layer"]: r for r in report["layers"]}
    assert rows["encoder"]["kind"] == "MAC" and rows["encoder"]["macs"] == 16
    assert rows["encoder"]["energy_pj"] == pytest.approx(4.6 * 16)
    assert rows["conv"]["macs"] == 9 * 1 * 2 * 16 and rows["conv"]["sops"] == 34
    assert rows["conv"]["energy_pj"] == pytest.approx(0.9 * 34)
    assert rows["conv"]["input_rate"] == 3 / 16
    assert rows["fc"]["macs"] == 80 and rows["fc"]["sops"] == 15
    totals = report["totals"]
    assert totals["snn_energy_pj"] == pytest.approx(4.6 * 16 + 0.9 * (34 + 15))
    assert totals["ann_energy_pj"] == pytest.approx(4.6 * (16 + 288 + 80))


def test_events_make_the_first_layer_ac():
    model = create_model("convnet_small", functools.partial(LIF, tau=2.0), num_classes=10, in_channels=2, T=3)
    meter = OpsMeter(model, events_input=True)
    frames = torch.zeros(2, 3, 2, 8, 8)
    frames[0, 0, 1, 4, 4] = 3.0  # three events at one pixel
    model(frames)
    encoder = meter.report()["layers"][0]
    assert encoder["kind"] == "AC" and encoder["sops"] == 3 * 9 * 16 / 2  # per sample


def test_dense_macs_match_torch_flop_counter():
    model = create_model("preact_resnet18", functools.partial(ILIF, tau=1.1), num_classes=10, in_channels=3, T=1)
    meter = OpsMeter(model)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(torch.randn(1, 3, 32, 32))
    ours = meter.report()["totals"]["macs_per_step"]
    assert ours == pytest.approx(counter.get_total_flops() / 2, rel=0.01)


def test_state_ops_per_step():
    assert LIF().state_ops() == (1, 3)
    assert ILIF().state_ops() == (7, 8)
    assert ILIF(current_inhibition=False).state_ops() == (5, 5)
    assert ILIF(membrane_inhibition=False).state_ops() == (3, 6)
    assert PLIF().state_ops() == (2, 5)


def test_temporal_gradient_ratio_and_weight_norms():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 6), LIF(tau=2.0, step_mode="m", surrogate=Surrogate("sigmoid", 2.0)))
    meter = TemporalGradientMeter(net)
    x = torch.randn(4, 3, 5)
    hidden = net[0](x)
    hidden.retain_grad()
    net[1](hidden).sum().backward()
    expected = hidden.grad[0].abs().mean() / hidden.grad[-1].abs().mean()
    assert meter.ratios()["1"] == pytest.approx(expected.item(), rel=1e-6)
    assert meter.network_ratio() == pytest.approx(expected.item(), rel=1e-6)
    assert weight_grad_norms(net) == {"0": pytest.approx(net[0].weight.grad.norm().item())}


def test_saved_for_backward_counts_each_storage_once_without_the_models_own_tensors():
    from ilif.metrics.memory import resident, saved_for_backward
    from ilif.neurons import LIF

    x = torch.randn(4, 8, requires_grad=True)
    w = torch.nn.Parameter(torch.randn(8))
    # x * w saves x (and w, left out); x * x saves x twice (counted once); exp saves its 2×8 result; a view
    # of x times a number saves nothing
    _, saved = saved_for_backward(lambda: (x * w).sum() + (x * x).sum() + (x[:2] * 3).exp().sum(), exclude=[w])
    assert saved == {"bytes": 4 * 8 * 4 + 2 * 8 * 4, "storages": 2, "by_dtype": {"float32": 192}}
    neuron = LIF(step_mode="m")
    _, saved = saved_for_backward(lambda: neuron(torch.randn(4, 10, requires_grad=True)), exclude=resident(neuron))
    assert saved == {"bytes": 4 * 10 * 4, "storages": 1, "by_dtype": {"float32": 160}}  # LIF keeps its h [T, N]


@pytest.mark.parametrize("T", [1, 6])
def test_a_lean_ilif_keeps_what_lif_keeps(T):
    """Bytes kept for the backward per neuron-step, float32, after a reset: LIF its h (4); ILIF x, h,
    m_seq and the uint8 mask (13); either with trainer.memory=lean its input x alone (4)."""
    from ilif.metrics.memory import resident, saved_for_backward
    from ilif.neurons import ILIF, LIF
    from ilif.train.build import set_memory

    kept = {}
    for mode in ("standard", "lean"):
        for cls in (LIF, ILIF):
            layer = torch.nn.Sequential(cls(step_mode="m"))
            assert set_memory(layer, mode) == []
            x = torch.randn(T, 3, 10, requires_grad=True)
            _, saved = saved_for_backward(lambda: layer(x), exclude=resident(layer))
            kept[mode, cls.__name__] = saved["bytes"] / x.numel()
    assert kept == {("standard", "LIF"): 4, ("standard", "ILIF"): 13, ("lean", "LIF"): 4, ("lean", "ILIF"): 4}

