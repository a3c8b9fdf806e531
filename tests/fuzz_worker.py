"""Runs fuzz cases in-process, one after another, and appends one JSON line per case to a results file.

    python fuzz_worker.py BASE_JSON RESULTS SEED START STOP

It runs in its own process (started by test_fuzz.py) so a crash inside a native library (a segmentation fault
in onnxruntime) kills only the worker: the parent sees a "start" line without its "end" and records that case.
A case passes when `snnc` exits 0 or 2 without a traceback, a refusal is one `snnc: error:` line (or argparse's
usage error), a refused case leaves no file behind, and a finished case leaves no temporary file.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fuzz_cases import make_case  # noqa: E402

from snnc.apps.cli import main  # noqa: E402

CASE_SECONDS = 60  # a case that runs longer is a hang


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang()


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


def run_case(base: dict[str, Path], i: int, seed: int, work: Path) -> dict:
    folder = work / f"case{i}"
    kind, argv = make_case(base, i, seed, folder)
    before = _files(folder)
    err, out = io.StringIO(), io.StringIO()
    logging.root.handlers.clear()  # basicConfig in main() binds the current (redirected) stderr
    rc, why = None, ""
    signal.alarm(CASE_SECONDS)
    tic = time.perf_counter()
    native = tempfile.TemporaryFile()  # what native libraries (onnxruntime's logger) write to file descriptor 2
    saved = os.dup(2)
    os.dup2(native.fileno(), 2)
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                rc = main(argv)
            except SystemExit as exc:  # argparse
                rc = exc.code if isinstance(exc.code, int) else 2
    except Hang:
        why = f"hang (> {CASE_SECONDS} s)"
    except BaseException as exc:  # noqa: BLE001 - any exception leaving main() is a traceback for the user
        import traceback

        why = "traceback: " + "".join(traceback.format_exception(exc))[-1500:]
    finally:
        signal.alarm(0)
        os.dup2(saved, 2)
        os.close(saved)
    seconds = time.perf_counter() - tic
    native.seek(0)
    text = native.read().decode(errors="replace") + err.getvalue()
    native.close()
    lines = [ln for ln in text.splitlines() if ln.strip() and not ln.startswith(("snnc: WARNING", "snnc: INFO"))
             and "Warning" not in ln and not ln.startswith("  ")]
    after = _files(folder)
    if not why:
        if rc not in (0, 2):
            why = f"exit code {rc}"
        elif "Traceback" in text:
            why = "traceback in stderr"
        elif rc == 2:
            argparse_error = any(ln.startswith("usage:") for ln in lines) and ": error:" in lines[-1]
            if not argparse_error and not (len(lines) == 1 and lines[0].startswith("snnc: error: ")):
                why = "not one 'snnc: error:' line"
            elif after != before:
                why = f"left files behind: {sorted(after - before)}"
        elif any(".tmp" in p or "/.snnc-" in p or p.startswith(".") for p in after - before):
            why = f"temporary files left: {sorted(after - before)}"
    result = {"i": i, "kind": kind, "argv": argv, "rc": rc, "ok": not why, "why": why, "seconds": round(seconds, 3),
              "stderr": text[-600:]}
    shutil.rmtree(folder, ignore_errors=True)
    return result


def main_worker(base_json: str, results: str, seed: int, start: int, stop: int) -> None:
    base = {k: Path(v) for k, v in json.loads(Path(base_json).read_text()).items()}
    work = Path(results).parent / f"work{start}"
    work.mkdir(exist_ok=True)
    signal.signal(signal.SIGALRM, _alarm)
    with open(results, "a") as f:
        for i in range(start, stop):
            f.write(json.dumps({"i": i, "start": True}) + "\n")
            f.flush()
            f.write(json.dumps(run_case(base, i, seed, work)) + "\n")
            f.flush()
    os._exit(0)  # skip interpreter teardown of native libraries


if __name__ == "__main__":
    a = sys.argv[1:]
    main_worker(a[0], a[1], int(a[2]), int(a[3]), int(a[4]))
