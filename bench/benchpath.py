"""Imported first by every script in bench/: the queue benchmark's file, bench/queue.py, would
otherwise shadow the standard library's ``queue`` (which Ray, asyncio and concurrent.futures
import) for anything run from this folder. This folder goes to the end of the path, the
repository root to the front."""

import os
import sys

_BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _BENCH_DIR] + [_BENCH_DIR]
if os.path.dirname(_BENCH_DIR) not in sys.path:
    sys.path.insert(0, os.path.dirname(_BENCH_DIR))
