"""Run the fault suite and write docs/reliability.rst from what it tried and saw.

    python tools/reliability_report.py           # the short counts CI runs (about a minute)
    python tools/reliability_report.py --long    # at least 50 kills per backend, 10,000 fuzzed files

The fault tests append one JSON object per fault to the file named by ``OBJIO_RELIABILITY_LOG``
(the ``fault_log`` fixture in conftest.py); this script runs them under pytest with that set, reads
the log and pytest's JUnit XML, and writes the page. Records of faults this script has no entry for
(another backend's suite, say) are listed too, so a new fault test shows up without editing it.
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
import os
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ElementTree
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CORE_TESTS = [
    "tests/test_hostile_files.py",
    "tests/test_fuzz.py",
    "tests/test_full_disk.py",
    "tests/test_killed_writers.py",
    "tests/test_local_backend.py",
]
PLUGIN_TEST_PATTERNS = ["plugins/*/tests/test_*fault*.py", "plugins/*/tests/test_*kill*.py"]

# (fault id as the tests record it, fragments of "module::test" that test it, fault, how it is tested)
CATALOG: list[tuple[str, str, str, str]] = [
    (
        "hostile-files",
        "test_hostile_files::",
        "Hostile files: every case issue 8 lists (unknown or LZMA compression, encryption flag, damaged "
        "deflate data, non-UTF-8 names, 100,000 ``[`` in ``objio.json``, unparsable or executable npy "
        "headers, shapes such as ``(-1, -3)``, 65 dimensions or ``(True, True)``, structured and object "
        "dtypes, directory offsets past the file, duplicate and overlapping members, a deflated member "
        "declaring a 4 GiB npy header or 512 MiB it does not hold, bad CRCs)",
        "``tests/test_hostile_files.py``: one hand-made file per case, loaded under ``tracemalloc``; each "
        "must raise ``CorruptFileError`` or ``UnsafeFileError`` naming the file and the member, and peak "
        "memory must stay below the file's size plus 8 MiB.",
    ),
    (
        "fuzz",
        "test_fuzz::test_mutated",
        "Mutated valid files",
        "``tests/test_fuzz.py``: hypothesis mutates four valid files (objio's stored members, objio's "
        "members deflated, ``np.savez``, ``np.savez_compressed``) with bit flips, byte and 16/32-bit field "
        "overwrites (weighted towards the zip directory), cuts, insertions and deletions; only typed "
        "errors may escape, peak memory below the file's size plus 8 MiB. Fixed seed in CI.",
    ),
    (
        "bit-flips",
        "test_fuzz::test_single_bit",
        "Single bit flips",
        "``tests/test_fuzz.py``: every bit of every byte of the four files (long run; CI: one bit of every "
        "third byte). A flipped file is refused, or loads exactly the original names and values.",
    ),
    (
        "storage-error-while-reading",
        "storage_error_while_reading",
        "A storage error while reading (object deleted, endpoint down, EIO)",
        "``tests/test_hostile_files.py``: a reader failing after 0, 100 or 5,000 bytes; the error must "
        "come out as itself, never as ``CorruptFileError``.",
    ),
    (
        "special-files",
        "fifo|dev_zero|link_to_a_device",
        "FIFOs, devices and symlinks to them named like checkpoints",
        "``tests/test_local_backend.py``, ``tests/test_hostile_files.py``: refused at once with "
        "``ObjectNotFoundError`` (is a FIFO / device, not a regular file), never listed; a symlink to a "
        "regular file still is an object.",
    ),
    (
        "full-disk-rlimit",
        "file_size_limit",
        "File-size limit (EFBIG through ``RLIMIT_FSIZE``)",
        "``tests/test_full_disk.py``: a child process limited to 1 MiB saves a checkpoint that fits, one "
        "that does not, then one that fits; ``StorageFullError`` (a ``StorageError`` and ``OSError`` with "
        "errno 27), no temp file, the earlier checkpoint restores.",
    ),
    (
        "full-disk-tmpfs",
        "full_disk_gives|full_disk_while",
        "Full disk (ENOSPC on a 1 MiB tmpfs)",
        "``tests/test_full_disk.py``: as root, a 1 MiB tmpfs; the same sequence, errno 28; also a write "
        "that fails inside the save function, whose ``close()`` fails again. Skipped where mount fails.",
    ),
    (
        "killed-writer-point",
        "test_killed_writers::test_a_writer_killed_at_a_chosen_point",
        "Writers killed at chosen points",
        "``tests/test_killed_writers.py``: SIGKILL while paused after opening, before ``names.npy``, "
        "mid-arrays, before ``objio.json``, before the fsync, before the create-only link, after it; the "
        "file is absent (or complete, after the link), the earlier one intact, and the next writer in the "
        "folder removes the leftover temp file at once.",
    ),
    (
        "killed-writer-random",
        "test_killed_writers::test_writers_killed_at_random_moments",
        "Writers killed at random moments",
        "``tests/test_killed_writers.py``: a writer saving three 4 MiB checkpoints is killed after a random "
        "0-100 ms; every visible checkpoint must load complete, nothing committed earlier may change, and "
        "the next writer leaves no temp file.",
    ),
    (
        "s3-killed-save-point",
        "test_s3_kills::test_saves_killed_at_chosen_points",
        "Checkpoint saves on S3 killed at chosen points",
        "``plugins/objio-s3/tests/test_s3_kills.py`` (moto), through ``objio.testing.kill_checkpoint_saves``: "
        "a forked writer pauses before its multipart upload starts, before part 1, before part 2, before "
        "``CompleteMultipartUpload`` and is SIGKILLed there; nothing new is listed, the earlier checkpoint "
        "restores bit-exact, and ``storage.cleanup(0)`` aborts the dead writer's upload (none is left).",
    ),
    (
        "s3-killed-save-random",
        "test_s3_kills::test_saves_killed_at_random_moments",
        "Checkpoint saves on S3 killed at random moments",
        "``plugins/objio-s3/tests/test_s3_kills.py``: a writer saving two ~5 MiB checkpoints (multipart) is "
        "killed at a random moment within 1.2 times an undisturbed writer's run; ``indices()`` keeps every "
        "earlier index plus at most the dead writer's first ones, each restoring bit-exact; ``cleanup(0)`` "
        "leaves no upload.",
    ),
    (
        "gcs-killed-save-point",
        "test_gcs_kills::test_saves_killed_at_chosen_points",
        "Checkpoint saves on GCS killed at chosen points",
        "``plugins/objio-gcs/tests/test_gcs_kills.py`` (fake-gcs-server), the same harness: paused before the "
        "resumable session opens, before chunk 1, before chunk 2, before the finalising chunk; nothing new "
        "is listed, the earlier checkpoint restores bit-exact (a dead writer's session cannot be listed by "
        "anyone; it is invisible and GCS drops it after a week).",
    ),
    (
        "gcs-killed-save-random",
        "test_gcs_kills::test_saves_killed_at_random_moments",
        "Checkpoint saves on GCS killed at random moments",
        "``plugins/objio-gcs/tests/test_gcs_kills.py``: as on S3, with two 1 MiB checkpoints in 256 KiB chunks.",
    ),
    (
        "leftovers",
        "temp_file|swept|cleanup|name_max|names_up_to",
        "Killed writers' leftovers, long names",
        "``tests/test_local_backend.py``: an unlocked temp file is removed by the next writer at once, a "
        "locked one never; without working locks only files untouched for 15 minutes; ``cleanup(older_than)``; "
        "names of 200, 232 and 255 bytes save (temp names hashed to fit NAME_MAX).",
    ),
    (
        "unlistable",
        "unlistable|unreadable_folder|under_a_file",
        "An unlistable folder, a logdir that is a file",
        "``tests/test_local_backend.py``: ``list()`` raises ``StoragePermissionError`` (not an empty list, "
        "which a restore took for a first run), and a clear ``StorageError`` under a file.",
    ),
]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long", action="store_true", help="the long trial counts (--long-faults)")
    parser.add_argument("--output", default=str(ROOT / "docs" / "reliability.rst"))
    parser.add_argument("pytest_args", nargs="*", help="more arguments for pytest")
    args = parser.parse_args()

    tests = CORE_TESTS + sorted(p for pattern in PLUGIN_TEST_PATTERNS for p in glob.glob(str(ROOT / pattern)))
    with tempfile.TemporaryDirectory() as scratch:
        log, junit = Path(scratch) / "faults.jsonl", Path(scratch) / "junit.xml"
        command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", f"--junitxml={junit}", *tests]
        command += ["--long-faults"] if args.long else []
        command += args.pytest_args
        started = datetime.datetime.now(datetime.timezone.utc)
        result = subprocess.run(command, cwd=ROOT, env={**os.environ, "OBJIO_RELIABILITY_LOG": str(log)})
        records = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
        cases = _junit_cases(junit) if junit.exists() else []
    page = _page(records, cases, long=args.long, started=started, status=result.returncode)
    Path(args.output).write_text(page, encoding="utf-8")
    print(f"wrote {args.output}: {len(records)} records, {len(cases)} tests, pytest exit {result.returncode}")
    return result.returncode


def _junit_cases(path: Path) -> list[dict[str, Any]]:
    cases = []
    for case in ElementTree.parse(path).getroot().iter("testcase"):
        outcome = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                outcome = "failed"
            elif child.tag == "skipped":
                outcome = "skipped"
        name = f"{case.get('classname', '').rsplit('.', 1)[-1]}::{case.get('name', '')}"
        cases.append({"name": name, "time": float(case.get("time", 0)), "outcome": outcome})
    return cases


def _page(records: list[dict[str, Any]], cases: list[dict[str, Any]], *, long: bool, started: Any, status: int) -> str:
    by_fault: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        by_fault[record["fault"]].append(record)
    totals = {o: sum(c["outcome"] == o for c in cases) for o in ("passed", "failed", "skipped")}
    seconds = sum(c["time"] for c in cases)
    lines = [
        ".. Generated by tools/reliability_report.py: edit the script, not this page.",
        "",
        "Reliability",
        "===========",
        "",
        "objio promises that a checkpoint is complete or invisible, never clobbered, never able to run code, "
        "and that any bytes at all give a typed error (``CorruptFileError`` or ``UnsafeFileError``) naming the "
        "file and the member, within memory bounded by what the file holds. This page lists the faults the "
        "test suite inflicts to hold objio to that, how, how often, and what came out.",
        "",
        "Regenerate it with ``python tools/reliability_report.py`` (the short counts CI runs), or "
        "``python tools/reliability_report.py --long`` for the long run: 60 randomly killed writers on local "
        "disk (plus seven at chosen points), 50 killed checkpoint saves each on S3 and GCS (plus four at "
        "chosen points each), 10,000 hypothesis examples and every single-bit flip of four "
        "files. The same long counts run in the ordinary suite with ``pytest --long-faults`` or "
        "``OBJIO_LONG_FAULTS=1``.",
        "",
        f"This page: {'long' if long else 'short (CI)'} run of {started:%Y-%m-%d %H:%M} UTC; "
        f"{totals['passed']} tests passed, {totals['failed']} failed, {totals['skipped']} skipped "
        f"in {seconds:.0f} s of test time (pytest exit status {status}).",
        "",
        ".. list-table::",
        "   :header-rows: 1",
        "   :widths: 22 40 10 28",
        "",
        "   * - Fault",
        "     - How it is tested",
        "     - Trials",
        "     - Outcome",
    ]
    seen = set()
    for key, fragments, title, how in CATALOG:
        found = by_fault.get(key, [])
        seen.add(key)
        matching = [c for c in cases if any(fragment in c["name"] for fragment in fragments.split("|"))]
        trials = sum(int(r.get("trials", 0)) for r in found) or len(matching)
        lines += [f"   * - {title}", f"     - {how}", f"     - {trials:,}", f"     - {_outcome(found, matching)}"]
    for key in sorted(set(by_fault) - seen):
        found = by_fault[key]
        trials = sum(int(r.get("trials", 0)) for r in found)
        tests = sorted({r["test"].split("::")[0] for r in found})
        lines += [
            f"   * - {key}",
            f"     - {', '.join(f'``{t}``' for t in tests)}",
            f"     - {trials:,}",
            f"     - {_outcome(found, [])}",
        ]
    worst = max((r.get("peak_bytes", 0) for r in records if r["fault"] == "hostile-files"), default=0)
    lines += [
        "",
        f"Peak memory of the worst hostile file: {worst / 1024:,.0f} KiB above what was allocated before it "
        "(``tracemalloc``), against 4,048 MB before issue 8.",
        "",
        "Limits, said plainly: a flip in the zip directory's copy of the name ``objio.json`` hides objio's "
        "metadata, so a bfloat16 array reads as raw ``|V2`` bytes, as from a plain npz; "
        "``load_var_collection`` then refuses to assign it to a bfloat16 variable. Where ``flock`` is not "
        "available or fails, killed writers' temp files are recognised by age alone (15 minutes untouched).",
        "",
    ]
    return "\n".join(lines)


def _outcome(records: list[dict[str, Any]], cases: list[dict[str, Any]]) -> str:
    parts = []
    failed = [c["name"] for c in cases if c["outcome"] == "failed"]
    failed += [r["test"] for r in records if r.get("failed")]
    counts: dict[str, int] = defaultdict(int)
    for record in records:
        for name, value in record.items():
            if name not in ("test", "fault", "trials", "peak_bytes", "base", "point") and isinstance(value, int):
                counts[name] += value
    parts += [f"{name.replace('_', ' ')}: {value:,}" for name, value in sorted(counts.items())]
    bases = sorted({r["base"] for r in records if "base" in r})
    if bases:
        parts.append("files: " + ", ".join(bases))
    peaks = [r["peak_bytes"] for r in records if "peak_bytes" in r]
    if peaks:
        parts.append(f"worst peak memory {max(peaks) / 1024:,.0f} KiB")
    if cases:
        passed = sum(c["outcome"] == "passed" for c in cases)
        skipped = sum(c["outcome"] == "skipped" for c in cases)
        parts.append(f"{passed}/{len(cases)} tests passed" + (f" ({skipped} skipped)" if skipped else ""))
    if failed:
        parts.append("FAILED: " + ", ".join(failed))
    return "; ".join(parts) or "no record"


if __name__ == "__main__":
    sys.exit(main())
