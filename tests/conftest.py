"""Shared pytest set-up. The tests mirror the package: ``tests/<subpackage>/test_<module
or concept>.py``; the project-wide checks (layering, public API, docs, bad input) sit
here. Helpers shared by several test modules live in ``tests/helpers.py`` (imported as
``helpers``), small shared networks in ``tests/nets.py`` and the VisualDL server of the
dashboard tests in ``tests/dashboard_server.py``, never in a test module.

Doctests of the package run with the suite (``--doctest-modules`` in setup.cfg); an
example that registers a criterion or model must unregister it, so nothing leaks
into the tests.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))   # `import helpers` from any rootdir

# a PaddleSlim user's script (it imports paddleslim): run by test_tutorial.py
# with its imports changed, never imported as it is
collect_ignore = ["paddleslim_tutorial.py"]
