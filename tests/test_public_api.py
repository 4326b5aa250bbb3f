"""The public API in `condsearch/__init__.py`: every name resolves, and `condsearch.search` is the
search function, named apart from the package that implements it (`condsearch.orchestrate`)."""

import subprocess
import sys

import condsearch


def test_every_public_name_resolves():
    for name in condsearch.__all__:
        assert getattr(condsearch, name) is not None, name


def test_search_is_a_function_whatever_was_imported_first():
    # A fresh interpreter, so the package import really comes before the first attribute access.
    code = ("import condsearch.orchestrate._points, condsearch, inspect\n"
            "assert callable(condsearch.search)\n"
            "from condsearch import search\n"
            "assert callable(search)\n"
            "assert inspect.isfunction(condsearch.search)\n"
            "assert condsearch.search is condsearch.orchestrate.search\n"
            "print(inspect.signature(condsearch.search))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "trials" in done.stdout
