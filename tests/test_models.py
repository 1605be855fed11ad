import functools

import pytest
import torch

from ilif.conf import compose_config, group_options
from ilif.models import create_model, model_names
from ilif.models.layers import TemporalDropout
from ilif.neurons import ILIF, LIF, Surrogate

CASES = [  # name, in_channels, input shape, T
    ("convnet_small", 1, (3, 1, 8, 8), 4),
    ("convnet_small", 2, (3, 4, 2, 8, 8), 4),
    ("preact_resnet18", 3, (2, 3, 32, 32), 2),
    ("vgg11_bn", 2, (2, 2, 2, 48, 48), 2),
    ("resnet34", 3, (1, 3, 64, 64), 1),
]


def _model(name, cls, in_channels, T, **kw):
    return create_model(name, functools.partial(cls, tau=1.1), num_classes=7, in_channels=in_channels, T=T, **kw)


@pytest.mark.parametrize("name, in_channels, shape, T", CASES)
def test_output_shape_and_shared_checkpoint(name, in_channels, shape, T):
    lif, ilif = (_model(name, cls, in_channels, T) for cls in (LIF, ILIF))
    assert list(lif.state_dict()) == list(ilif.state_dict())
    assert sum(p.numel() for p in lif.parameters()) == sum(p.numel() for p in ilif.parameters())
    ilif.load_state_dict(lif.state_dict(), strict=True)
    out = ilif.eval()(torch.rand(shape))
    assert out.shape == (T, shape[0], 7)


def test_architecture_sizes():
    resnet = _model("preact_resnet18", ILIF, 3, 6)
    assert sum(isinstance(m, ILIF) for m in resnet.modules()) == 17
    assert 11.1e6 < sum(p.numel() for p in resnet.parameters()) < 11.3e6
    assert sum(isinstance(m, ILIF) for m in _model("vgg11_bn", ILIF, 2, 10).modules()) == 8
    assert sum(isinstance(m, ILIF) for m in _model("resnet34", ILIF, 3, 4).modules()) == 33
    registered = [o for o in group_options("model") if "_target_" not in compose_config([f"model={o}"]).model]
    assert model_names() == registered  # every registered backbone has its config file, and back


def test_neurons_come_from_the_factory():
    factory = functools.partial(ILIF, tau=1.7, surrogate=Surrogate("atan", 0.5), kappa_current=0.1)
    model = create_model("preact_resnet18", factory, num_classes=10, in_channels=3, T=2)
    neurons = [m for m in model.modules() if isinstance(m, ILIF)]
    assert {(n.params.tau, n.params.surrogate.gamma, n.params.kappa_current, n.step_mode) for n in neurons} == {
        (1.7, 0.5, 0.1, "m")}


@pytest.mark.parametrize("name, in_channels, shape, T", CASES[:4])
def test_eval_outputs_of_per_step_and_multi_step_bn_agree(name, in_channels, shape, T):
    torch.manual_seed(1)
    fast = _model(name, ILIF, in_channels, T)
    slow = _model(name, ILIF, in_channels, T, bn_per_step=True)
    slow.load_state_dict(fast.state_dict())
    x = torch.rand(shape)
    for model in (fast, slow):  # a few train-mode passes so the running statistics are not trivial
        model.train()
        with torch.no_grad():
            model(x)
    with torch.no_grad():
        for m_fast, m_slow in zip(fast.modules(), slow.modules()):
            if isinstance(m_fast, torch.nn.BatchNorm2d):
                m_slow.running_mean.copy_(m_fast.running_mean)
                m_slow.running_var.copy_(m_fast.running_var)
        fast.eval()
        slow.eval()
        torch.testing.assert_close(fast(x), slow(x), rtol=1e-5, atol=1e-5)


def test_per_step_bn_uses_per_step_statistics_in_training():
    from ilif.models.layers import TimeBatchNorm2d

    x = torch.randn(3, 4, 2, 5, 5) + torch.arange(3.0).view(3, 1, 1, 1, 1)
    per_step = TimeBatchNorm2d(2, per_step=True)(x)
    merged = TimeBatchNorm2d(2)(x)
    assert per_step[1].mean().abs() < 1e-5  # each step normalised on its own
    assert merged[2].mean() > 0.5          # steps share statistics


def test_temporal_dropout_mask_is_fixed_across_steps():
    drop = TemporalDropout(0.5).train()
    out = drop(torch.ones(6, 200, 10))
    assert all(torch.equal(out[0], out[t]) for t in range(6))
    assert set(out.unique().tolist()) == {0.0, 2.0}
    assert torch.equal(drop.eval()(torch.ones(2, 3)), torch.ones(2, 3))
    with pytest.raises(ValueError, match="dropout"):
        TemporalDropout(1.0)


def test_static_encoder_runs_once_per_sample():
    model = _model("preact_resnet18", LIF, 3, 6)
    rows = []
    model.encoder.register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    model(torch.randn(2, 3, 32, 32))
    assert rows == [2]


def test_bad_model_and_event_length():
    with pytest.raises(ValueError) as err:
        create_model("vgg16", LIF, num_classes=10, in_channels=3)
    assert str(err.value) == (f"model.name='vgg16' is not allowed: choose one of {model_names()}, or give "
                              "model._target_ (a backbone function outside the package)")
    with pytest.raises(ValueError, match="3 frames but the model runs T=4"):
        _model("convnet_small", LIF, 2, 4)(torch.rand(1, 3, 2, 8, 8))


def test_vgg_classifier_is_initialised_as_the_release():
    torch.manual_seed(0)
    model = create_model("vgg11_bn", lambda: LIF(step_mode="m"), num_classes=10, in_channels=2, T=2)
    weight, bias = model.classifier.module.weight, model.classifier.module.bias
    assert torch.equal(bias, torch.zeros_like(bias))
    assert abs(weight.std().item() - 0.01) < 0.0005 and abs(weight.mean().item()) < 0.0005
