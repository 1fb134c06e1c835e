"""The ``objio`` console script, run as a user runs it: a subprocess, its output, its exit status."""

from __future__ import annotations

import contextlib
import doctest
import io
import json
import os
import re
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import jax.numpy as jnp
import numpy as np
import pytest

import objio
from objio.cli import main

OBJIO = Path(sys.executable).with_name("objio")


def objio_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run the installed ``objio`` script; stderr is not a terminal, so no bar unless --progress."""
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    return subprocess.run([str(OBJIO), *map(str, args)], capture_output=True, text=True, timeout=300, cwd=cwd, env=env)


def assert_one_line_error(result: subprocess.CompletedProcess[str], status: int, *fragments: str) -> None:
    assert result.returncode == status, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("objio: error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0]


def _collection(scale: float = 1.0) -> objio.VarCollection:
    return objio.VarCollection(
        {
            "(Linear).w": objio.TrainVar(jnp.arange(12, dtype=jnp.float32).reshape(3, 4) * scale),
            "(Linear).b": objio.TrainVar(jnp.zeros(4, jnp.bfloat16)),
            "step": objio.StateVar(jnp.array(7, jnp.int32)),
        }
    )


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run with checkpoints 5, 10 and 15 (10 and 15 carry metadata)."""
    ckpt = objio.Checkpoint(tmp_path / "run", keep_ckpts=None)
    ckpt.save(_collection(), 5)
    for idx in (10, 15):
        with objio.io._files.open_for_write(ckpt.path(idx)) as stream:
            objio.codec.write_npz(stream, ["w"], [np.ones(2)], metadata={"val_loss": 1.0 / idx, "epoch": idx})
    return tmp_path / "run"


@pytest.fixture
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "model.npz"
    objio.io.save_var_collection(path, _collection())
    return path


def test_help_teaches_with_examples_for_every_command() -> None:
    result = objio_cli("--help")
    assert result.returncode == 0
    for command in ("ls", "inspect", "verify", "cp", "diff", "gc", "plugins"):
        assert f"objio {command} " in result.stdout, command
    assert "Exit status" in result.stdout
    cp_help = objio_cli("cp", "--help")
    assert "objio cp model.npz model.safetensors" in cp_help.stdout and "--overwrite" in cp_help.stdout


def test_python_dash_m_objio_is_the_same_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "objio", "--version"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and result.stdout.strip() == f"objio {objio.__version__}"


def test_usage_errors_exit_2() -> None:
    assert objio_cli().returncode == 2
    assert objio_cli("frobnicate").returncode == 2
    assert objio_cli("cp", "only-one-argument").returncode == 2
    assert_one_line_error(objio_cli("ls", "nosuchscheme://bucket/run"), 2, "no objio backend handles")


def test_ls_lists_a_runs_checkpoints_with_size_time_and_metadata_keys(run_dir: Path) -> None:
    result = objio_cli("ls", run_dir)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"3 checkpoint(s) in {run_dir}/ckpt"
    assert lines[1].split() == ["INDEX", "SIZE", "MODIFIED", "METADATA", "KEYS"]
    assert [line.split()[0] for line in lines[2:]] == ["5", "10", "15"]
    assert lines[3].endswith("epoch, val_loss") and lines[2].endswith("-")

    data = json.loads(objio_cli("ls", run_dir, "--json").stdout)
    assert [c["index"] for c in data["checkpoints"]] == [5, 10, 15]
    assert data["checkpoints"][1]["metadata_keys"] == ["epoch", "val_loss"]
    assert data["checkpoints"][0]["size"] == (run_dir / "ckpt" / "0000000005.npz").stat().st_size
    assert data["checkpoints"][0]["modified"].endswith("+00:00")


def test_ls_of_a_plain_folder_lists_its_objects(model_file: Path) -> None:
    data = json.loads(objio_cli("ls", model_file.parent, "--json").stdout)
    assert data["objects"] == [
        {"key": "model.npz", "size": model_file.stat().st_size, "modified": data["objects"][0]["modified"]}
    ]
    assert "1 object(s) in" in objio_cli("ls", model_file.parent).stdout


def test_inspect_shows_names_shapes_dtypes_sizes_totals_version_and_metadata(run_dir: Path, model_file: Path) -> None:
    result = objio_cli("inspect", model_file)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == f"{model_file}: npz, objio format version 1"
    rows = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()[2:5]}
    assert rows == {
        "(Linear).w": ["3x4", "float32", "48", "B"],
        "(Linear).b": ["4", "bfloat16", "8", "B"],
        "step": ["()", "int32", "4", "B"],
    }
    assert "total: 3 array(s), 60 B (60 bytes)" in result.stdout

    data = json.loads(objio_cli("inspect", run_dir / "ckpt" / "0000000010.npz", "--json").stdout)
    assert data["metadata"] == {"val_loss": 0.1, "epoch": 10}
    assert data["variables"] == [{"name": "w", "shape": [2], "dtype": "float64", "nbytes": 16}]
    assert (data["format"], data["version"], data["arrays"], data["bytes"]) == ("npz", 1, 1, 16)


def test_inspect_a_file_numpy_wrote_says_format_version_0(tmp_path: Path) -> None:
    path = tmp_path / "np.npz"
    np.savez(path, names=np.array(["a"]), **{"0": np.ones((2, 2), np.int64)})
    path.rename(tmp_path / "np.npz")
    result = objio_cli("inspect", path)
    assert result.returncode == 0, result.stderr
    assert "format version 0 (written by Objax or numpy)" in result.stdout
    assert_one_line_error(objio_cli("inspect", tmp_path / "missing.npz"), 1, "missing.npz")


def test_verify_passes_sound_files_and_exits_1_naming_the_damaged_member(tmp_path: Path, model_file: Path) -> None:
    damaged = tmp_path / "damaged.npz"
    data = bytearray(model_file.read_bytes())
    with zipfile.ZipFile(model_file) as archive:
        info = archive.getinfo("0.npy")
    data[info.header_offset + 200] ^= 0xFF  # inside 0.npy's array data: only the CRC can tell
    damaged.write_bytes(bytes(data))

    ok = objio_cli("verify", model_file)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert ok.stdout.splitlines()[1].split()[:3] == [str(model_file), "ok", "3"]

    bad = objio_cli("verify", model_file, damaged, "--json")
    assert bad.returncode == 1
    report = json.loads(bad.stdout)
    assert report["ok"] is False
    assert [f["ok"] for f in report["files"]] == [True, False]
    assert "0.npy fails its CRC-32 check" in report["files"][1]["error"]

    missing = objio_cli("verify", tmp_path / "nothing.npz")
    assert missing.returncode == 1 and "DAMAGED" in missing.stdout


def test_cp_is_create_only_unless_overwrite_and_copies_into_folders(tmp_path: Path, model_file: Path) -> None:
    copy = tmp_path / "copy.npz"
    result = objio_cli("cp", model_file, copy)
    assert result.returncode == 0, result.stderr
    assert copy.read_bytes() == model_file.read_bytes()
    assert result.stdout.strip() == f"copied {model_file} -> {copy}: {objio.progress.format_size(copy.stat().st_size)}"

    copy.write_bytes(b"keep me")
    assert_one_line_error(objio_cli("cp", model_file, copy), 1, "exists", "--overwrite")
    assert copy.read_bytes() == b"keep me"
    assert objio_cli("cp", model_file, copy, "--overwrite").returncode == 0
    assert copy.read_bytes() == model_file.read_bytes()

    (tmp_path / "into").mkdir()
    assert objio_cli("cp", model_file, tmp_path / "into").returncode == 0
    assert (tmp_path / "into" / "model.npz").read_bytes() == model_file.read_bytes()
    assert objio_cli("cp", model_file, f"{tmp_path}/new-folder/").returncode == 0
    assert (tmp_path / "new-folder" / "model.npz").is_file()
    assert sorted(p.name for p in (tmp_path / "into").iterdir()) == ["model.npz"]  # no temp file left


def test_cp_shows_a_progress_bar_when_asked_and_is_quiet_otherwise(tmp_path: Path, model_file: Path) -> None:
    shown = objio_cli("cp", model_file, tmp_path / "a.npz", "--progress")
    assert shown.returncode == 0 and "copying" in shown.stderr and "B/s" in shown.stderr
    quiet = objio_cli("cp", model_file, tmp_path / "b.npz")
    assert quiet.returncode == 0 and quiet.stderr == ""


def test_cp_converts_npz_to_safetensors_and_back(tmp_path: Path, model_file: Path) -> None:
    pytest.importorskip("safetensors")
    st = tmp_path / "model.safetensors"
    result = objio_cli("cp", model_file, st)
    assert result.returncode == 0, result.stderr
    assert "(converted npz to safetensors)" in result.stdout
    assert st.read_bytes()[8:9] == b"{"
    back = tmp_path / "back.npz"
    assert objio_cli("cp", st, back).returncode == 0
    same = objio_cli("diff", model_file, back)
    assert same.returncode == 0, same.stdout
    assert same.stdout.strip() == "no differences: 3 variable(s) equal"


def test_diff_reports_presence_shape_dtype_and_value_with_the_largest_difference(tmp_path: Path) -> None:
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    with objio.io._files.open_for_write(a) as stream:
        objio.codec.write_npz(
            stream,
            ["same", "value", "shape", "dtype", "only_a"],
            [np.ones(3), np.array([1.0, 2.0, np.nan]), np.ones(3), np.ones(2, np.float32), np.ones(1)],
        )
    with objio.io._files.open_for_write(b) as stream:
        objio.codec.write_npz(
            stream,
            ["same", "value", "shape", "dtype", "only_b"],
            [np.ones(3), np.array([1.0, 2.25, np.nan]), np.ones(4), np.ones(2, np.float64), np.ones(1)],
        )
    result = objio_cli("diff", a, b, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["equal"] is False and report["same"] == 1
    kinds = {d["name"]: d for d in report["differences"]}
    assert kinds["value"]["kind"] == "value" and kinds["value"]["max_abs_diff"] == 0.25
    assert (kinds["shape"]["kind"], kinds["shape"]["a"], kinds["shape"]["b"]) == ("shape", [3], [4])
    assert (kinds["dtype"]["a"], kinds["dtype"]["b"], kinds["dtype"]["max_abs_diff"]) == ("float32", "float64", 0.0)
    assert (kinds["only_a"]["a"], kinds["only_a"]["b"]) == ("present", "missing")
    assert (kinds["only_b"]["a"], kinds["only_b"]["b"]) == ("missing", "present")
    text = objio_cli("diff", a, b).stdout
    assert "4 variable(s) differ, 1 equal" not in text and "5 variable(s) differ, 1 equal" in text


def test_gc_keep_applies_retention_and_dry_run_deletes_nothing(run_dir: Path) -> None:
    dry = objio_cli("gc", run_dir, "--keep", "1", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would delete [5, 10]" in dry.stdout
    assert len(list((run_dir / "ckpt").iterdir())) == 3

    result = objio_cli("gc", run_dir, "--keep", "2", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["checkpoints_deleted"] == [5]
    assert sorted(p.name for p in (run_dir / "ckpt").iterdir()) == ["0000000010.npz", "0000000015.npz"]
    assert objio_cli("gc", run_dir, "--keep", "0").returncode == 2


def test_gc_removes_leftovers_where_the_backend_can_and_says_so_where_it_cannot(run_dir: Path) -> None:
    result = objio_cli("gc", run_dir, "--older-than", "0")
    assert result.returncode == 0, result.stderr
    storage = objio.open_storage(run_dir)
    if callable(getattr(storage, "cleanup", None)):
        assert result.stdout.startswith("leftovers: removed ")
    else:
        assert result.stdout.strip() == "leftovers: not supported by this backend (LocalStorage has no cleanup)"


def test_plugins_lists_backends_and_their_schemes() -> None:
    result = objio_cli("plugins")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].split() == ["BACKEND", "SCHEMES", "FROM"]
    data = json.loads(objio_cli("plugins", "--json").stdout)
    by_name = {b["name"]: b for b in data["backends"]}
    assert by_name["objio.local"]["distribution"] == "built in"
    assert by_name["objio.memory"]["schemes"] == "memory://"
    assert data["failures"] == []


DOCS_CLI = Path(__file__).resolve().parents[1] / "docs" / "cli.rst"


def _console_examples(text: str) -> list[tuple[str, str]]:
    """``(command, expected output)`` of every ``$ objio ...`` line in the page's console blocks."""
    examples: list[tuple[str, list[str]]] = []
    in_console = False
    for line in text.splitlines():
        if line.startswith(".. code-block:: console"):
            in_console = True
        elif line and not line.startswith(" "):
            in_console = False
        elif in_console and line.startswith("   $ objio "):
            examples.append((line[len("   $ ") :], []))
        elif in_console and examples and line.startswith("   "):
            examples[-1][1].append(line[3:])
    return [(command, "\n".join(expected) + "\n") for command, expected in examples]


def _loosely(command: str, shown: str) -> str:
    """The page's output with what varies from run to run (times, sizes, other installed plugins) as ``...``."""
    expected = re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", "...", shown)
    expected = re.sub(r"(?<=[ :])\d+(\.\d)? (B|KiB)\b", "...", expected)
    if command.split()[1] == "plugins":  # the built-in backends are always there; others depend on the install
        expected = "\n".join(expected.splitlines()[:4]) + "\n...\n"
    return expected


def test_every_example_of_the_cli_page_runs_as_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("safetensors")
    monkeypatch.chdir(tmp_path)
    setup = doctest.testfile(str(DOCS_CLI), module_relative=False, optionflags=doctest.ELLIPSIS)
    assert setup.failed == 0
    examples = _console_examples(DOCS_CLI.read_text(encoding="utf-8"))
    assert {command.split()[1] for command, _ in examples} >= {"ls", "inspect", "verify", "cp", "diff", "gc", "plugins"}
    checker = doctest.OutputChecker()
    flags = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE
    for command, shown in examples:
        expected = _loosely(command, shown)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            status = main(shlex.split(command)[1:])
        got = out.getvalue() + err.getvalue()
        assert checker.check_output(expected, got, flags), f"{command}\nexpected:\n{expected}\ngot:\n{got}"
        assert status == (1 if expected.startswith("objio: error") or "differ," in expected else 0), command


def test_ls_of_one_file_lists_that_file(model_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["ls", str(model_file), "--json"]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["objects"]
    assert (listed["key"], listed["size"]) == ("model.npz", model_file.stat().st_size)


def test_diff_treats_nans_in_the_same_places_as_equal_in_bfloat16_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    values = np.array([1.0, np.nan], dtype=jnp.bfloat16)
    for name in ("a.npz", "b.npz"):
        with objio.io._files.open_for_write(tmp_path / name) as stream:
            objio.codec.write_npz(stream, ["x"], [values])
    assert main(["diff", str(tmp_path / "a.npz"), str(tmp_path / "b.npz")]) == 0
    assert capsys.readouterr().out.strip() == "no differences: 1 variable(s) equal"


class _SweepingStorage:
    """A storage that offers ``cleanup(older_than)``, as backends with leftovers to sweep do."""

    def __init__(self, inner: objio.Storage) -> None:
        self._inner = inner
        self.asked: list[float] = []

    def cleanup(self, older_than: float) -> int:
        self.asked.append(older_than)
        return 2

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)


def test_gc_calls_the_backends_cleanup_with_older_than(
    run_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    storage = _SweepingStorage(objio.open_storage(run_dir))
    monkeypatch.setattr("objio.cli._gc.open_storage", lambda url: storage)
    assert main(["gc", str(run_dir), "--older-than", "600"]) == 0
    assert storage.asked == [600.0]
    assert capsys.readouterr().out.strip() == "leftovers: removed 2 older than 600 s"
    assert main(["gc", str(run_dir), "--keep", "1", "--dry-run", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert storage.asked == [600.0]  # a dry run sweeps nothing
    assert (report["cleanup_supported"], report["leftovers_removed"], report["checkpoints_deleted"]) == (
        True,
        None,
        [5, 10],
    )


def test_plugins_reports_the_plugins_that_failed_to_load(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(
        objio._host, "plugin_failures", {"acme": "ImportError: No module named 'acme_sdk'"}, raising=False
    )
    assert main(["plugins"]) == 0
    assert "failed to load: acme: ImportError: No module named 'acme_sdk'" in capsys.readouterr().out
    assert main(["plugins", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["failures"] == [
        {"name": "acme", "error": "ImportError: No module named 'acme_sdk'"}
    ]


@pytest.mark.parametrize("command", ["ls", "inspect", "verify", "cp", "diff", "gc", "plugins"])
def test_every_commands_help_shows_examples_and_json(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"objio {command}" in text.split("examples:", 1)[1]
    assert "--json" in text
