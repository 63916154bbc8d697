"""Test-session settings.

Kernels are compiled in the test process (not in background processes) so that every
run takes the same path; ``test_warmup.py`` tests the background compiler on its own.
The kernel cache is the user's default one, so compiled kernels are shared between
test runs (as they are between a user's processes).
"""
import os
import sys

os.environ.setdefault("BATCHDIFF_BACKGROUND_COMPILE", "0")
sys.path.insert(0, os.path.dirname(__file__))   # tests import corpus.py
