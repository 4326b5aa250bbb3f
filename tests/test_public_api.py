"""The public API in `condsearch/__init__.py`: every name resolves, and `condsearch.search` stays
the search function even after its package has been imported."""

import subprocess
import sys

import condsearch


def test_every_public_name_resolves():
    for name in condsearch.__all__:
        assert getattr(condsearch, name) is not None, name


def test_search_is_callable_after_its_package_was_imported_first():
    # A fresh interpreter, so the package import really comes before the first attribute access.
    code = ("import condsearch.search._points, condsearch, inspect\n"
            "assert callable(condsearch.search)\n"
            "from condsearch import search\n"
            "assert callable(search)\n"
            "print(inspect.signature(condsearch.search.search))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "trials" in done.stdout
