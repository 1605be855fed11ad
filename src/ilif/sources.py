"""Signatures and registries read from the package's source, without importing it: what the config
check needs of a component (a neuron class, a backbone, a dataset function) before torch is
imported. For the shapes it reads (a ``def``, a class with its own ``__init__`` or one base's, a
re-export, ``functools.partial``), the answer is the signature :mod:`inspect` gives (tested for every
shipped component); anything else (a decorator, a dataclass, several bases, a base from another
package, a name made at run time, a module that is not a plain file) is None, and the check waits
for the import.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import inspect
import sys
from pathlib import Path
from typing import Optional

DEPTH = 8  # re-exports and base classes followed at most


class Shadow:
    """A stand-in for a callable that is not imported: its name and signature, which
    :func:`inspect.signature` reads as it reads the callable's own. Calling it is an error."""

    def __init__(self, name: str, signature: inspect.Signature):
        self.__name__, self.__signature__ = name, signature

    def __call__(self, *args, **kwargs):
        raise TypeError(f"{self.__name__} was read from its source, not imported: it cannot be called")


def module_file(name: str) -> Optional[Path]:
    """The source file of module ``name`` (``a.b.c``), found without running any package's
    ``__init__``; None when it is not a plain ``.py`` file on the search path."""
    try:
        spec = importlib.util.find_spec(name.split(".")[0])
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin)
    for part in name.split(".")[1:]:
        folder = path.parent / part
        path = folder / "__init__.py" if (folder / "__init__.py").is_file() else path.parent / f"{part}.py"
    return path if path.is_file() and path.suffix == ".py" else None


@functools.lru_cache(maxsize=None)
def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


def _module_tree(module: str) -> Optional[ast.Module]:
    path = module_file(module)
    try:
        return None if path is None else _tree(path)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None


def _absolute(module: str, node: ast.ImportFrom, is_package: bool) -> str:
    """The module an ``from X import y`` inside ``module`` names."""
    if not node.level:
        return node.module or ""
    parts = module.split(".")
    base = parts if is_package else parts[:-1]
    base = base[:len(base) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def _top_level(tree: ast.Module) -> list[ast.stmt]:
    """The statements of a module's top level, with those of its ``if TYPE_CHECKING:`` blocks (the
    names a module that imports lazily binds on first use)."""
    out = []
    for node in tree.body:
        checking = isinstance(node, ast.If) and ast.unparse(node.test) in ("TYPE_CHECKING", "typing.TYPE_CHECKING")
        out += node.body if checking else [node]
    return out


def definition(module: str, name: str, depth: int = 0) -> Optional[tuple[str, ast.AST]]:
    """(module, node) where ``name`` of ``module`` is bound last at its top level: a ``def``, a
    ``class`` or an assigned expression, following ``from ... import`` re-exports; None when the
    source cannot tell (or ``name`` is a module)."""
    tree = _module_tree(module)
    if tree is None or depth > DEPTH:
        return None
    found = None
    for node in _top_level(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name == name:
            found = (module, node)
        elif isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
            found = (module, node.value)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    source = _absolute(module, node, module_file(module).name == "__init__.py")
                    is_module = module_file(f"{source}.{alias.name}") is not None
                    found = None if is_module else definition(source, alias.name, depth + 1)
    return found


def _signature(function: ast.FunctionDef | ast.AsyncFunctionDef, skip: int = 0) -> inspect.Signature:
    """The signature of a ``def`` (its first ``skip`` positional parameters left out); a default is
    shown as ``...`` (only whether there is one matters here)."""
    args, P = function.args, inspect.Parameter
    positional = [*args.posonlyargs, *args.args]
    defaults = [P.empty] * (len(positional) - len(args.defaults)) + [...] * len(args.defaults)
    kinds = [P.POSITIONAL_ONLY] * len(args.posonlyargs) + [P.POSITIONAL_OR_KEYWORD] * len(args.args)
    params = [P(a.arg, k, default=d) for a, k, d in zip(positional, kinds, defaults)][skip:]
    if args.vararg:
        params.append(P(args.vararg.arg, P.VAR_POSITIONAL))
    params += [P(a.arg, P.KEYWORD_ONLY, default=P.empty if d is None else ...)
               for a, d in zip(args.kwonlyargs, args.kw_defaults)]
    if args.kwarg:
        params.append(P(args.kwarg.arg, P.VAR_KEYWORD))
    return inspect.Signature(params)


def _bound(signature: inspect.Signature, call: ast.Call) -> Optional[inspect.Signature]:
    """``signature`` as ``functools.partial(f, *args, **keywords)`` leaves it: the positional
    arguments bound are gone, a keyword bound keeps its parameter with a default (keyword-only, as
    are those after it); None for ``*args`` or ``**keywords`` in the call."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(k.arg is None for k in call.keywords):
        return None
    P = inspect.Parameter
    params = list(signature.parameters.values())
    positional = [p for p in params if p.kind in (P.POSITIONAL_ONLY, P.POSITIONAL_OR_KEYWORD)]
    gone = {p.name for p in positional[:len(call.args) - 1]}
    keywords = {k.arg for k in call.keywords}
    out, keyword_only = [], False
    for p in params:
        if p.name in gone:
            continue
        keyword_only = keyword_only or (p.name in keywords and p.kind == P.POSITIONAL_OR_KEYWORD)
        if keyword_only and p.kind == P.POSITIONAL_OR_KEYWORD:
            p = p.replace(kind=P.KEYWORD_ONLY)
        out.append(p.replace(default=...) if p.name in keywords else p)
    return signature.replace(parameters=[p for p in out if p.kind != P.VAR_POSITIONAL or not keyword_only])


def _binds_init(node: ast.stmt) -> bool:
    """Whether a statement of a class body binds ``__init__`` (a ``def`` or an assignment)."""
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return node.name == "__init__"
    targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
    return any(isinstance(t, ast.Name) and t.id == "__init__" for t in targets)


def signature_of(module: str, node: ast.AST, depth: int = 0) -> Optional[inspect.Signature]:
    """The call signature of what ``node`` (in ``module``) defines: a function, a class (its
    ``__init__``, or its first base's), a name for another, or ``functools.partial`` of one."""
    if depth > DEPTH:
        return None
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        return None if node.decorator_list else _signature(node)  # a decorator may change the signature
    if isinstance(node, ast.ClassDef):
        made = [n for n in node.body if _binds_init(n)]
        if node.decorator_list or node.keywords or any(isinstance(n, ast.FunctionDef) and n.name == "__new__"
                                                       for n in node.body):
            return None  # a dataclass, a metaclass or __new__ makes the signature at run time
        if made:  # the last binding of __init__ in the body is the one Python keeps
            last = made[-1]
            plain = isinstance(last, ast.FunctionDef) and last.name == "__init__" and not last.decorator_list
            return _signature(last, skip=1) if plain else None
        if len(node.bases) != 1 or not isinstance(node.bases[0], ast.Name):
            return None  # no base (object's signature), or several (the method resolution order decides)
        found = definition(module, node.bases[0].id)
        return None if found is None or not isinstance(found[1], ast.ClassDef) else signature_of(*found, depth + 1)
    if isinstance(node, ast.Name):
        found = definition(module, node.id)
        return None if found is None else signature_of(*found, depth + 1)
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("partial", "functools.partial") and node.args:
        inner = signature_of(module, node.args[0], depth + 1)
        return None if inner is None else _bound(inner, node)
    return None


def split(target: str) -> tuple[str, str]:
    """(module, name) of a dotted ``target``: ``a.b.name`` or ``a.b:name``."""
    module, _, name = target.rpartition(":") if ":" in target else target.rpartition(".")
    return module, name


def same(target: str, other: str) -> bool:
    """Whether two dotted paths name one definition in the source (``ilif.neurons.LIF`` and
    ``ilif.neurons.modules:LIF``, say)."""
    found = definition(*split(target))
    return found is not None and found == definition(*split(other))


def shadow(target: str) -> Optional[Shadow]:
    """A :class:`Shadow` of the callable at dotted ``target`` (``a.b.name`` or ``a.b:name``) read from
    its source; None when the source cannot tell. A module already imported is asked directly."""
    module, name = split(target)
    loaded = getattr(sys.modules.get(module), "__dict__", {})  # not hasattr: a lazy module would import
    if name in loaded:
        try:
            return Shadow(name, inspect.signature(loaded[name]))
        except (TypeError, ValueError):
            return None
    found = definition(module, name)
    signature = None if found is None else signature_of(*found)
    return None if signature is None else Shadow(name, signature)


def absent(target: str) -> bool:
    """True when the source of ``target``'s module is readable and binds no such name at its top level
    (no ``def``, ``class``, assignment or import of it, no module ``__getattr__``, no ``import *``): a
    misspelt dotted path, told without importing."""
    module, name = split(target)
    tree = _module_tree(module) if module else None
    if tree is None or name in getattr(sys.modules.get(module), "__dict__", {}):
        return False
    bound = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            bound.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            bound.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            bound |= {(a.asname or a.name).split(".")[0] for a in node.names}
    if "__getattr__" in bound:  # a module of this package that imports lazily serves its __all__ alone
        if not module.startswith("ilif."):
            return False
        try:
            bound = (bound - {"__getattr__"}) | set(constant(module, "__all__"))
        except (LookupError, ValueError):
            return False
    return not bound & {name, "*"} and module_file(f"{module}.{name}") is None


@functools.lru_cache(maxsize=None)
def mapping(module: str, name: str) -> Optional[dict[str, Optional[Shadow]]]:
    """The registry ``name = {"key": callable, ...}`` of ``module`` as {key: its shadow (None where
    the source cannot tell)}; None when ``name`` is not a dict of string keys in the source."""
    found = definition(module, name)
    if found is None or not isinstance(found[1], ast.Dict):
        return None
    out = {}
    for key, value in zip(found[1].keys, found[1].values):
        if not (isinstance(key, ast.Constant) and isinstance(key.value, str)):
            return None
        signature = signature_of(found[0], value)
        out[key.value] = None if signature is None else Shadow(key.value, signature)
    return out


@functools.lru_cache(maxsize=None)
def decorated(package: str, decorator: str) -> dict[str, Shadow]:
    """{name: shadow} of every top-level function that ``@decorator`` marks in the modules the
    package's ``__init__`` imports (``from . import a, b``: the registry the import fills, such as the
    backbones' ``@register_model``)."""
    tree = _module_tree(package)
    imported = [f"{package}.{alias.name}" for node in (tree.body if tree else [])
                if isinstance(node, ast.ImportFrom) and node.level == 1 and node.module is None for alias in node.names]
    out = {}
    for module in imported:
        for node in _module_tree(module).body if _module_tree(module) else []:
            if isinstance(node, ast.FunctionDef) and [ast.unparse(d) for d in node.decorator_list] == [decorator]:
                out[node.name] = Shadow(node.name, _signature(node))
    return out


def constant(module: str, name: str):
    """The literal value of ``name = <literal>`` in ``module``'s source (``ast.literal_eval``)."""
    found = definition(module, name)
    if found is None:
        raise LookupError(f"{module}.{name} is not in the source")
    return ast.literal_eval(found[1])
