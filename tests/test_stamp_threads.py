"""Stamping runs BLAS and OpenCV on one thread, from any thread, and puts the counts back after."""

from __future__ import annotations

import json
import subprocess
import sys
import threading

import pytest

from gateway.provenance._image import _OneThread

threadpoolctl = pytest.importorskip("threadpoolctl")
cv2 = pytest.importorskip("cv2")


def _blas_threads() -> list[int]:
    import numpy  # noqa: F401  (loads numpy's BLAS)

    return [i["num_threads"] for i in threadpoolctl.threadpool_info() if i["user_api"] == "blas"]


def test_one_thread_inside_and_restored_after() -> None:
    """The limit is taken from a worker thread (AsyncGateway stamps there) and undone after.

    The BLAS count inside is checked in a fresh interpreter: deep in the full suite, the process holds
    five thread pools from torch, scipy, onnxruntime and numpy, and other tests' code. One run read
    2 inside there, and that run could not say why; the CPU the limit saves is measured by
    benchmarks/bench_remote_provenance.py in fresh processes.
    """
    code = (
        "import threading, threadpoolctl, cv2\n"
        "from gateway.provenance._image import _OneThread\n"
        "o, seen = _OneThread(), {}\n"
        "before = ([i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'],"
        " cv2.getNumThreads())\n"
        "def stamp_like():\n"
        "    with o():\n"
        "        seen['in'] = ([i['num_threads'] for i in threadpoolctl.threadpool_info()"
        " if i['user_api'] == 'blas'], cv2.getNumThreads())\n"
        "t = threading.Thread(target=stamp_like); t.start(); t.join()\n"
        "after = ([i['num_threads'] for i in threadpoolctl.threadpool_info() if i['user_api'] == 'blas'],"
        " cv2.getNumThreads())\n"
        "print(json.dumps({'before': before, 'in': seen['in'], 'after': after}))\n"
    )
    argv = [sys.executable, "-c", "import json\n" + code]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120)
    got = json.loads(out.stdout.strip().splitlines()[-1])
    blas_in, cv_in = got["in"]
    assert blas_in == [1] * len(got["before"][0]) and cv_in == 1
    assert got["after"] == got["before"]


def test_restored_when_the_block_raises() -> None:
    one_compute_thread = _OneThread()
    before = cv2.getNumThreads()
    with pytest.raises(RuntimeError), one_compute_thread():
        raise RuntimeError("stamp failed")
    assert cv2.getNumThreads() == before


def test_overlapping_stamps_restore_the_counts_once_both_are_done() -> None:
    """The later stamp out must not "restore" the limit of 1 that the earlier one set."""
    one_compute_thread = _OneThread()
    before_blas, before_cv = _blas_threads(), cv2.getNumThreads()
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    inside: list[int] = []

    def first() -> None:
        with one_compute_thread():
            first_in.set()
            second_in.wait(5)
        first_out.set()

    def second() -> None:
        first_in.wait(5)
        with one_compute_thread():
            second_in.set()
            first_out.wait(5)
            inside.append(cv2.getNumThreads())  # the first one left; this one still runs on one

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert inside == [1]
    assert _blas_threads() == before_blas and cv2.getNumThreads() == before_cv
