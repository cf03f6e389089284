"""The user-code template's parameters, entry loading and error lines (no Ray needed)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from aiplatform import sdk
from aiplatform.errors import InvalidArgument
from aiplatform.training.catalog import get_template
from aiplatform.training.user_code import load_entry, user_error_line


def test_parameters_are_checked_and_a_source_is_told_from_a_built_version() -> None:
    template = get_template("user-code")
    params = template.parse_params({"entry": "pkg.train:train_loop", "code": "a" * 64, "config": {"epochs": 2}})
    assert template.dataset_source(params) == "mnist" and params.max_failures == 3
    assert (
        template.dataset_source(template.parse_params({"entry": "m:f", "code": "a" * 64, "dataset": "digits@abc"}))
        is None
    )
    assert template.default_model_name(params) == "pkg"
    code = {"code": "a" * 64}
    for raw, message in [
        ({}, "entry: Field required"),
        ({"entry": "pkg.train:fn"}, "code: Field required"),  # no entry without its own archive
        ({"entry": "pkg/train.py", **code}, "package.module:function"),
        ({"entry": "os:system; rm", **code}, "package.module:function"),
        ({"entry": "subprocess:run", **code}, "module 'subprocess' is Python's own"),
        ({"entry": "os.path:join", **code}, "module 'os' is Python's own"),
        ({"entry": "m:f", "code": "../../x"}, "64 lowercase hex"),
        ({"entry": "m:f", "config": {"blob": "x" * 70_000}, **code}, "over 64 KiB"),
        ({"entry": "m:f", "workers": 0, **code}, "workers"),
        ({"entry": "m:f", "surprise": 1, **code}, "surprise: Extra inputs"),
    ]:
        with pytest.raises(InvalidArgument, match=message):
            template.parse_params(raw)


def test_entries_that_do_not_resolve_are_named(tmp_path: Path) -> None:
    (tmp_path / "userpkg").mkdir()
    (tmp_path / "userpkg" / "__init__.py").write_text("")
    (tmp_path / "userpkg" / "train.py").write_text("VALUE = 3\ndef loop(config):\n    return config\n")
    sys.path.insert(0, str(tmp_path))
    try:
        assert load_entry("userpkg.train:loop")({"a": 1}) == {"a": 1}
        with pytest.raises(InvalidArgument, match="module 'userpkg.nope' is not in the task's code"):
            load_entry("userpkg.nope:loop")
        with pytest.raises(InvalidArgument, match="has no function 'VALUE'"):
            load_entry("userpkg.train:VALUE")
    finally:
        sys.path.remove(str(tmp_path))


def test_an_entry_runs_only_code_of_its_own_archive(tmp_path: Path) -> None:
    """A module the process imported already (the platform's own, an installed package's) is
    not the archive's, even when the archive holds a file of that name."""
    (tmp_path / "pytest").mkdir()
    (tmp_path / "pytest" / "__init__.py").write_text("def main(config):\n    return 'archive'\n")
    (tmp_path / "ownpkg").mkdir()
    (tmp_path / "ownpkg" / "__init__.py").write_text("def main(config):\n    return 'own'\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with pytest.raises(InvalidArgument, match="module 'pytest' is not the one in the task's code archive"):
            load_entry("pytest:main", tmp_path)
        assert load_entry("ownpkg:main", tmp_path)({}) == "own"
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ownpkg", None)


def test_the_users_exception_becomes_one_line_with_its_place() -> None:
    class WorkerGroupError(Exception):
        def __init__(self, failures: dict[int, Exception]) -> None:
            super().__init__("Training failed due to worker errors")
            self.worker_failures = failures

    snippet = (
        'Traceback (most recent call last):\n  File "/tmp/aip-code/abc/mypkg/train.py", line 12, in train_loop\n'
        '    raise ValueError("learning rate must be positive")\nValueError: learning rate must be positive'
    )
    line = user_error_line(WorkerGroupError({0: RuntimeError(snippet)}))
    assert line == "the training function failed: ValueError: learning rate must be positive (train.py:12)"


def test_the_sdk_outside_a_task_says_where_it_works() -> None:
    for call in (sdk.context, lambda: sdk.report({"loss": 1.0}), sdk.load_checkpoint, lambda: list(sdk.batches())):
        with pytest.raises(InvalidArgument, match="inside a user-code task's training function"):
            call()


def test_an_entry_module_is_found_in_an_archives_files_as_module_or_package() -> None:
    from aiplatform.training.user_code import module_in_archive

    names = [
        "pkg/__init__.py",
        "pkg/train.py",
        "pkg/sub/__init__.py",
        "pkg/fast.cpython-311-x86_64-linux-gnu.so",
        "src/other/mod.py",
    ]
    for module in ("pkg", "pkg.train", "pkg.sub", "pkg.fast"):
        assert module_in_archive(module, names), module
    for module in ("pkg.missing", "other.mod", "pkg.tr", "train"):
        assert not module_in_archive(module, names), module
