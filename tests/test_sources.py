"""ilif.sources: signatures and registries read from source agree with what importing gives, for
every shipped component; what the source cannot tell is None (the imported check decides)."""

import inspect
import textwrap

import pytest

from ilif import sources
from ilif.conf import CONFIG_DIR
from ilif.neurons.rules import RULED


def _shape(thing) -> list[tuple]:
    """(name, kind, has a default) of each parameter of a callable or a signature: what the check reads."""
    signature = thing if isinstance(thing, inspect.Signature) else inspect.signature(thing)
    return [(p.name, p.kind, p.default is not p.empty) for p in signature.parameters.values()]


NEURONS = sorted({line.split(":", 1)[1].strip() for path in (CONFIG_DIR / "neuron").glob("*.yaml")
                  for line in path.read_text().splitlines() if line.startswith("_target_:")})


@pytest.mark.parametrize("target", NEURONS)
def test_a_neuron_class_read_from_source_has_the_signature_of_the_class(target):
    from hydra.utils import get_class

    cls = get_class(target)
    assert sources.definition(*target.rsplit(".", 1)) is not None
    assert _shape(sources.signature_of(*sources.definition(*target.rsplit(".", 1)))) == _shape(cls)


def test_the_dataset_registry_read_from_source_is_the_imported_one():
    from ilif.data import BUILTIN

    read = sources.mapping("ilif.data", "BUILTIN")
    assert list(read) == list(BUILTIN)  # the same names, in the same order
    for name, function in BUILTIN.items():
        assert _shape(read[name]) == _shape(function), name


def test_the_backbones_registered_by_decorator_are_read_from_source():
    from ilif.models.registry import _MODELS

    read = sources.decorated("ilif.models", "register_model")
    assert sorted(read) == sorted(_MODELS)
    for name, function in _MODELS.items():
        assert _shape(read[name]) == _shape(function), name


def test_constants_read_from_source_are_the_modules_own():
    from ilif.data.temporal import ROWS
    from ilif.neurons.rules import FAMILIES
    from ilif.neurons.surrogate import Family

    assert sources.constant("ilif.data.temporal", "ROWS") == ROWS == 8
    assert tuple(member.name.lower() for member in Family) == FAMILIES and [m.value for m in Family] == [0, 1, 2, 3]


SOURCE = '''
import dataclasses
import functools
from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:
    from .other import Lazy


def plain(a, b=1, *rest, c, d=2, **more):
    pass


def wrap(f):
    return f


@wrap
def decorated(a, b=1):
    pass


@wrap
def backbone(neuron, num_classes, in_channels, T, width=1):
    pass


class Base:
    def __init__(self, x, y=0):
        pass


class Child(Base):
    pass


class Module(nn.Module):
    pass


@dataclasses.dataclass
class Record:
    x: int = 0


bound = functools.partial(plain, 5, c=3)
by_keyword = functools.partial(plain, b=3)
alias = plain


class Other:
    def __init__(self, q):
        pass


class Two(Other, Base):
    pass


class Assigned(Base):
    __init__ = plain


class Twice:
    def __init__(self, first):
        pass

    def __init__(self, second=1):  # noqa: F811 - the last one counts
        pass
'''


@pytest.fixture
def scratch(tmp_path, monkeypatch):
    (tmp_path / "scratch_pkg").mkdir()
    (tmp_path / "scratch_pkg" / "__init__.py").write_text("")
    (tmp_path / "scratch_pkg" / "things.py").write_text(textwrap.dedent(SOURCE))
    (tmp_path / "scratch_pkg" / "other.py").write_text("def Lazy(q, r=1):\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import sys

    for name in [m for m in sys.modules if m.startswith("scratch_pkg")]:  # a fresh import in each test
        monkeypatch.delitem(sys.modules, name)
    return "scratch_pkg.things"


def test_what_the_source_tells_and_what_it_cannot(scratch):
    def shape(name):
        found = sources.shadow(f"{scratch}.{name}")
        return None if found is None else str(inspect.signature(found))

    assert shape("plain") == "(a, b=Ellipsis, *rest, c, d=Ellipsis, **more)"
    assert shape("bound") == "(b=Ellipsis, *rest, c=Ellipsis, d=Ellipsis, **more)"  # 5 is bound, c=3 a default
    assert shape("Two") is None and shape("Assigned") is None  # several bases; __init__ bound by assignment
    assert shape("alias") == shape("plain") and shape("Child") == "(x, y=Ellipsis)"  # a name, a base's __init__
    assert shape("Lazy") == "(q, r=Ellipsis)"  # re-exported under TYPE_CHECKING
    # a decorator, a dataclass, a base from another package: the source cannot tell
    assert shape("decorated") is None and shape("Record") is None and shape("Module") is None
    assert sources.absent(f"{scratch}.plian") and not sources.absent(f"{scratch}.plain")
    assert sources.absent("ilif.neurons.ILIFF") and not sources.absent("ilif.neurons.ILIF")  # ilif's lazy __all__
    assert sources.shadow("no_such_package.thing") is None and not sources.absent("no_such_package.thing")
    with pytest.raises(TypeError, match="read from its source, not imported"):
        sources.shadow(f"{scratch}.plain")(1, c=2)
    import importlib

    things = importlib.import_module(scratch)  # from here on, shadow() asks the module itself
    for name in ("bound", "by_keyword", "Twice"):  # what inspect says of them, up to the order
        found = sources.signature_of(*sources.definition(scratch, name))
        assert sorted(_shape(found)) == sorted(_shape(getattr(things, name))), name


def test_the_ruled_neurons_are_the_shipped_ones():
    from ilif.checks import ruled_neuron

    assert all(ruled_neuron(target) for target in NEURONS) and ruled_neuron("ilif.neurons.modules:LIF")
    assert not ruled_neuron("ilif.neurons.StepNeuron") and not ruled_neuron("ilif.neurons.ILIFF")


@pytest.mark.parametrize("target", RULED)
def test_every_parameter_a_ruled_neuron_takes_from_its_config_has_a_rule(target):
    """So the torch-free pass checks every value of the package's neurons (the build is skipped)."""
    from hydra.utils import get_class

    from ilif.checks import NEURON_GIVEN
    from ilif.neurons.rules import RULES

    own = set(inspect.signature(get_class(target)).parameters) - set(NEURON_GIVEN)
    assert own <= set(RULES), own - set(RULES)


def test_a_component_the_source_cannot_tell_about_is_checked_once_imported(scratch):
    from ilif.checks import check_torch_free
    from ilif.conf import compose_config
    from ilif.errors import ConfigError
    from ilif.train.config import validate

    cfg = compose_config([f"+model._target_={scratch}.backbone", "+model.widht=2"])
    assert check_torch_free(cfg) is False  # decorated: left to the imported pass
    with pytest.raises(ConfigError, match=r"^model.widht=2 is not allowed: did you mean width\? backbone takes"):
        validate(cfg)
    assert check_torch_free(compose_config([])) is True  # the shipped default: told by the source alone
