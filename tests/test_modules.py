import sys
from pathlib import Path

import pytest

from nbrunner.errors import InvalidParameter, ModulesFileError, UnknownModule
from nbrunner.modules import build_module, load_modules_file, lookup

TRAIN = {
    "python_module": "pkg.train",
    "params": {
        "epochs": {"type": "int", "default": 3, "min": 1},
        "lr": {"type": "float", "default": 0.001},
        "arch": {"type": "choice", "choices": ["small", "large"], "default": "small"},
        "amp": {"type": "bool", "default": False},
        "name": {"type": "str"},
    },
}


@pytest.fixture
def train():
    return build_module("train", TRAIN)


def test_params_become_argv_never_a_shell_string(train) -> None:
    values = train.validate_params({"epochs": 5, "amp": True, "name": "a b; rm -rf /"})
    assert train.argv(values) == [
        sys.executable,
        "-m",
        "pkg.train",
        "--epochs",
        "5",
        "--lr",
        "0.001",
        "--arch",
        "small",
        "--amp",
        "--name",
        "a b; rm -rf /",
    ]


def test_text_values_from_the_cli_are_typed(train) -> None:
    values = train.validate_params(
        {"epochs": "7", "lr": "0.5", "amp": "yes", "name": "x", "arch": "large"}
    )
    assert values == {"epochs": 7, "lr": 0.5, "arch": "large", "amp": True, "name": "x"}


@pytest.mark.parametrize(
    ("params", "message"),
    [
        (
            {"epochs": "abc", "name": "x"},
            r"parameter 'epochs' of module 'train' must be an int ≥ 1, got 'abc'",
        ),
        ({"epochs": 0, "name": "x"}, r"must be an int ≥ 1, got 0"),
        ({"epochs": 2.5, "name": "x"}, r"must be an int"),
        ({"epochs": True, "name": "x"}, r"must be an int"),
        ({"arch": "huge", "name": "x"}, r"must be one of 'small', 'large', got 'huge'"),
        ({"amp": "maybe", "name": "x"}, r"must be true or false, got 'maybe'"),
        ({"name": 3}, r"must be a string, got 3"),
        ({}, r"parameter 'name' of module 'train' is required"),
        (
            {"name": "x", "epoch": 3},
            r"unknown parameter 'epoch' for module 'train'; its parameters: epochs, lr, arch, amp, name",
        ),
    ],
)
def test_bad_values_name_the_parameter_the_value_and_what_is_allowed(
    train, params, message
) -> None:
    with pytest.raises(InvalidParameter, match=message):
        train.validate_params(params)


def test_a_bool_that_defaults_to_true_can_be_turned_off() -> None:
    spec = build_module(
        "m", {"command": ["prog"], "params": {"cache": {"type": "bool", "default": True}}}
    )
    assert spec.argv(spec.validate_params({"cache": False})) == ["prog", "--no-cache"]
    assert spec.argv(spec.validate_params({})) == ["prog", "--cache"]


def test_modules_file_resolves_scripts_and_cwd_relative_to_itself(tmp_path: Path) -> None:
    path = tmp_path / "modules.toml"
    path.write_text(
        '[modules.prep]\nscript = "prep.py"\ntimeout = 60\n'
        '[modules.prep.resources]\nmemory = "512MB"\ncpus = 2\n'
    )
    (tmp_path / "prep.py").write_text("")
    spec = load_modules_file(path)["prep"]
    assert spec.argv({}) == [sys.executable, str(tmp_path / "prep.py")]
    assert spec.cwd == str(tmp_path)
    assert spec.timeout == 60
    assert spec.resources.memory == 512_000_000 and spec.resources.cpus == 2


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[modules.a\n", "is not valid TOML"),
        (
            '[modules.a]\npython_module = "x"\nscript = "y.py"\n',
            "exactly one of python_module, script, command or notebook; got python_module, script",
        ),
        ('[modules.a]\ndescription = "nothing to run"\n', "exactly one of .* got none"),
        ('[modules.a]\ncommand = "prog --flag"\n', "command must be a list of strings"),
        ('[modules.a]\ncommand = ["p"]\ntimeout = -1\n', "timeout must be a positive number"),
        ('[modules.a]\ncommand = ["p"]\nbogus = 1\n', "unknown key 'bogus'"),
        (
            '[modules.a]\ncommand = ["p"]\n[modules.a.params]\nx = { type = "date" }\n',
            "has type 'date'; use one of int, float, str, bool, choice",
        ),
        (
            '[modules.a]\ncommand = ["p"]\n[modules.a.params]\nx = { type = "int", default = "three" }\n',
            "must be an int, got 'three'",
        ),
        (
            '[modules.a]\ncommand = ["p"]\n[modules.a.resources]\nmemory = "lots"\n',
            "memory must be a size like '4GB'",
        ),
        ("top = 1\n", "must hold only \\[modules.NAME\\] tables"),
    ],
)
def test_a_bad_modules_file_gives_one_clear_error(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "modules.toml"
    path.write_text(text)
    with pytest.raises(ModulesFileError, match=message) as info:
        load_modules_file(path)
    assert str(path) in str(info.value)


def test_unknown_module_lists_the_known_ones(train) -> None:
    with pytest.raises(UnknownModule, match="unknown module 'trian'; known modules: train"):
        lookup({"train": train}, "trian")


def test_a_missing_modules_file_is_empty(tmp_path: Path) -> None:
    assert load_modules_file(tmp_path / "absent.toml") == {}


def test_an_optional_param_takes_none_and_leaves_its_flag_out() -> None:
    spec = build_module(
        "fit",
        {
            "command": ["fit"],
            "params": {
                "depth": {"type": "int", "optional": True},
                "trees": {"type": "int", "default": 100, "optional": True},
                "lr": {"type": "float", "default": 0.1},
            },
        },
    )
    assert spec.validate_params({}) == {"depth": None, "trees": 100, "lr": 0.1}
    none = spec.validate_params({"depth": None, "trees": None})
    assert spec.argv(none) == ["fit", "--lr", "0.1"]
    assert spec.argv(spec.validate_params({"depth": "4"})) == [
        *("fit", "--depth", "4", "--trees", "100", "--lr", "0.1")
    ]
    assert spec.from_text("depth", "none") is None and spec.from_text("lr", "none") == "none"
    with pytest.raises(InvalidParameter) as refused:
        spec.validate_params({"lr": None})
    assert str(refused.value) == (
        "parameter 'lr' of module 'fit' cannot be None: leave it out for its default 0.1, "
        "or declare it { optional = true } in the modules file"
    )
    with pytest.raises(InvalidParameter, match="optional must be true or false"):
        build_module("bad", {"command": ["x"], "params": {"n": {"optional": "yes"}}})
