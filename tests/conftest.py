"""Shared pytest set-up. Helpers shared by several test modules live in
``tests/helpers.py`` (imported as ``helpers``; the VisualDL server of the dashboard
tests in ``tests/dashboard_server.py``), never in a test module.

Doctests of the package run with the suite (``--doctest-modules`` in setup.cfg); an
example that registers a criterion or model must unregister it, so nothing leaks
into the tests.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))   # `import helpers` from any rootdir

# a PaddleSlim user's script (it imports paddleslim): run by test_paddleslim_tutorial.py
# with its imports changed, never imported as it is
collect_ignore = ["paddleslim_tutorial.py"]
