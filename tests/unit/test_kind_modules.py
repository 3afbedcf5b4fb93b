from __future__ import annotations

import itertools
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from model.errors import ConfigError
from model.kinds_loader import load_kinds
from model.settings import Settings, load_settings

_names = itertools.count()

KINDS = """
from model.kinds import JobKind
from model.settings import Settings


def _transitions(sm, job):
    pass


one = JobKind("one", _transitions)
two = [JobKind("two", _transitions), JobKind("three", _transitions, "scan_workers")]
pair = (one, JobKind("four", _transitions))
number = 7
text = "one"
mapping = {"one": one}
mixed = [one, "two"]
named_replication = JobKind("replication", _transitions)
bad_name = JobKind("Not A Name!", _transitions)
named_nodes = JobKind("nodes", _transitions)
named_totals = JobKind("totals", _transitions)
empty_pool = JobKind("empty", _transitions, 0)
unknown_pool = JobKind("unknown", _transitions, "no_such_setting")


def sized(settings: Settings) -> list[JobKind]:
    return [JobKind("sized", _transitions, settings.max_job_workers)]


def single(settings: Settings) -> JobKind:
    return JobKind("single", _transitions)


def nothing(settings: Settings) -> list[JobKind]:
    return []


def fails(settings: Settings) -> list[JobKind]:
    raise RuntimeError("no kinds today")


def returns_number(settings: Settings) -> int:
    return 3


class Holder:
    kind = JobKind("held", _transitions)
"""


@pytest.fixture
def module(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[[str], str]:
    """Writes a module with ``source`` under a new name on sys.path; returns the name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source: str) -> str:
        name = f"kinds_{tmp_path.name}_{next(_names)}".replace("-", "_")
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


@pytest.fixture
def kinds_module(module: Callable[[str], str]) -> str:
    return module(KINDS)


def loaded(*entries: str, **values: object) -> list[str]:
    return [kind.name for kind in load_kinds(Settings(kind_modules=list(entries), **values))]


def test_no_entries_load_no_kinds() -> None:
    assert load_kinds(Settings()) == []


def test_a_kind_an_iterable_of_kinds_and_a_callable_of_the_settings_all_load_in_order(
    kinds_module: str,
) -> None:
    m = kinds_module
    assert loaded(f"{m}:one", f"{m}:two", f"{m}:sized", f"{m}:single", f"{m}:nothing") == [
        "one",
        "two",
        "three",
        "sized",
        "single",
    ]
    [sized] = load_kinds(Settings(kind_modules=[f"{m}:sized"], max_job_workers=7))
    assert sized.size(Settings(max_job_workers=7)) == 7


def test_a_dotted_attribute_is_followed(kinds_module: str) -> None:
    assert loaded(f"{kinds_module}:Holder.kind") == ["held"]


@pytest.mark.parametrize("entry", ["no_colon", ":one", "module:", "  :  "])
def test_an_entry_that_is_not_module_colon_attribute_is_a_config_error(entry: str) -> None:
    with pytest.raises(ConfigError) as error:
        loaded(entry)
    assert error.value.setting == "kind_modules"
    assert f"entry {entry!r}: expected 'package.module:attribute'" in str(error.value)


def test_a_module_that_is_not_found_is_named() -> None:
    with pytest.raises(ConfigError) as error:
        loaded("no_such_package.kinds:one")
    assert str(error.value) == (
        "setting 'kind_modules': entry 'no_such_package.kinds:one': "
        "module 'no_such_package.kinds' not found"
    )


def test_a_module_that_imports_a_missing_module_is_a_failed_import_not_a_missing_module(
    module: Callable[[str], str],
) -> None:
    name = module("import no_such_dependency_of_kinds\n")
    with pytest.raises(ConfigError, match=f"importing '{name}' failed: .*no_such_dependency"):
        loaded(f"{name}:one")


def test_a_module_that_raises_at_import_is_a_config_error_with_the_cause(
    module: Callable[[str], str],
) -> None:
    name = module("raise RuntimeError('broken at import')\n")
    with pytest.raises(ConfigError, match="broken at import") as error:
        loaded(f"{name}:one")
    assert f"entry '{name}:one'" in str(error.value)


def test_a_missing_attribute_is_named(kinds_module: str) -> None:
    with pytest.raises(
        ConfigError, match=f"entry '{kinds_module}:nope': module '{kinds_module}' has no"
    ):
        loaded(f"{kinds_module}:one", f"{kinds_module}:nope")


@pytest.mark.parametrize(
    ("attribute", "problem"),
    [
        ("number", "expected a JobKind or an iterable of them, got a int"),
        ("text", "expected a JobKind or an iterable of them, got a str"),
        ("mapping", "expected a JobKind or an iterable of them, got a dict"),
        ("mixed", "item 1 is a str, not a JobKind"),
        ("returns_number", "expected a JobKind or an iterable of them, got a int"),
    ],
)
def test_a_value_of_the_wrong_type_is_a_config_error(
    kinds_module: str, attribute: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as error:
        loaded(f"{kinds_module}:{attribute}")
    assert (
        str(error.value) == f"setting 'kind_modules': entry '{kinds_module}:{attribute}': {problem}"
    )


def test_a_callable_that_fails_is_a_config_error_with_its_error(kinds_module: str) -> None:
    with pytest.raises(
        ConfigError, match="calling fails failed: RuntimeError\\('no kinds today'\\)"
    ):
        loaded(f"{kinds_module}:fails")


@pytest.mark.parametrize(
    ("entries", "problem"),
    [
        (["named_replication"], "a kind named 'replication' is already registered"),
        (["one", "pair"], "a kind named 'one' is already registered"),
        (["bad_name"], "Not A Name!"),
        (["named_nodes"], "'nodes' is reserved: the pool statistics"),
        (["named_totals"], "'totals' is reserved: the pool statistics"),
        (["empty_pool"], "kind 'empty' needs a pool size >= 1, got 0"),
        (["unknown_pool"], "pool_size 'no_such_setting' is not a setting"),
    ],
)
def test_a_kind_the_service_could_not_run_is_a_config_error_naming_its_entry(
    kinds_module: str, entries: list[str], problem: str
) -> None:
    with pytest.raises(ConfigError, match=problem.replace("!", "\\!")) as error:
        loaded(*(f"{kinds_module}:{e}" for e in entries))
    assert f"entry '{kinds_module}:{entries[-1]}'" in str(error.value)


# -- the setting ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    ['["a.b:c", "d:e"]', "a.b:c, d:e", " a.b:c,d:e, "],
)
def test_the_environment_gives_kind_modules_as_json_or_separated_by_commas(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("JOBSERVICE_KIND_MODULES", value)
    assert load_settings().kind_modules == ["a.b:c", "d:e"]


def test_a_settings_file_gives_kind_modules_as_a_list(tmp_path: Path) -> None:
    config = tmp_path / "jobservice.toml"
    config.write_text('kind_modules = ["a.b:c", "d:e"]\n')
    assert load_settings(config_file=config).kind_modules == ["a.b:c", "d:e"]


@pytest.mark.parametrize("value", ["[a.b:c", "[1]", '["a:b", null]'])
def test_an_environment_value_that_is_no_list_of_strings_names_kind_modules(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("JOBSERVICE_KIND_MODULES", value)
    with pytest.raises(ConfigError, match="kind_modules"):
        load_settings()
