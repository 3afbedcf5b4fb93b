"""The job kinds a service process loads from the ``kind_modules`` setting.

Each entry is ``"package.module:attribute"`` (the attribute may be dotted, ``module:
Class.attr``). The attribute is a :class:`~model.kinds.JobKind`, an iterable of them,
or a callable that takes the :class:`~model.settings.Settings` and returns either.
The module is imported from ``sys.path`` as any import would be (``PYTHONPATH``, the
installed packages).

Every problem is a :class:`~model.errors.ConfigError` naming the setting and the
entry, raised before any actor starts: a malformed entry, a module that is not found
or fails to import, a missing attribute, a value of the wrong type, a callable that
fails, or a kind the service could not run (a bad or taken name, a bad pool size).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from typing import Any

from model.errors import ConfigError, InvalidRequest
from model.kinds import JobKind, KindRegistry
from model.settings import Settings

__all__ = ["SETTING", "load_kinds"]

#: The setting the entries come from, named by every error.
SETTING = "kind_modules"


def load_kinds(settings: Settings) -> list[JobKind]:
    """The kinds of every entry of ``settings.kind_modules``, in order.

    Raises :class:`ConfigError` (setting ``kind_modules``) naming the entry at fault.
    """
    registry = KindRegistry()
    kinds: list[JobKind] = []
    for entry in settings.kind_modules:
        for kind in _entry_kinds(entry, settings):
            try:
                registry.register(kind)
                kind.size(settings)
            except InvalidRequest as exc:
                raise _error(entry, str(exc)) from None
            except AttributeError:
                raise _error(
                    entry, f"kind {kind.name!r}: pool_size {kind.pool_size!r} is not a setting"
                ) from None
            kinds.append(kind)
    return kinds


def _entry_kinds(entry: str, settings: Settings) -> list[JobKind]:
    module_name, _, attribute = entry.partition(":")
    module_name, attribute = module_name.strip(), attribute.strip()
    if not module_name or not attribute:
        raise _error(entry, "expected 'package.module:attribute'")
    value: Any = _import(entry, module_name)
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise _error(entry, f"module {module_name!r} has no attribute {attribute!r}") from None
    if callable(value) and not isinstance(value, JobKind):
        try:
            value = value(settings)
        except Exception as exc:
            raise _error(entry, f"calling {attribute} failed: {exc!r}") from exc
    return _as_kinds(entry, value)


def _import(entry: str, module_name: str) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        # The module itself (or a package on its path) is missing; a module that is
        # found but imports a missing one is a failed import, said as such.
        if exc.name is not None and (module_name + ".").startswith(exc.name + "."):
            raise _error(entry, f"module {module_name!r} not found") from None
        raise _error(entry, f"importing {module_name!r} failed: {exc!r}") from exc
    except Exception as exc:
        raise _error(entry, f"importing {module_name!r} failed: {exc!r}") from exc


def _as_kinds(entry: str, value: object) -> list[JobKind]:
    if isinstance(value, JobKind):
        return [value]
    if not isinstance(value, Iterable) or isinstance(value, str | bytes | Mapping):
        raise _error(entry, f"expected a JobKind or an iterable of them, got {_type(value)}")
    kinds = list(value)
    for index, item in enumerate(kinds):
        if not isinstance(item, JobKind):
            raise _error(entry, f"item {index} is {_type(item)}, not a JobKind")
    return kinds


def _type(value: object) -> str:
    return f"a {type(value).__name__}"


def _error(entry: str, problem: str) -> ConfigError:
    return ConfigError(SETTING, f"entry {entry!r}: {problem}")
