"""Imported first by every script in bench/: the repository root goes to the front of the path, so
a script run from this folder measures the working tree's code."""

import os
import sys

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)
