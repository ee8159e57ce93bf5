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
