"""The development install runs the checkout's own files (an edit is what the next run uses)."""

import pathlib

import oqcompile
import oqcompile.models
import oqcompile.passes
from oqcompile.runtime import ops_library_path

CHECKOUT = pathlib.Path(__file__).resolve().parents[1]


def test_packages_are_imported_from_the_checkout():
    assert pathlib.Path(oqcompile.__file__).resolve() == CHECKOUT / "oqcompile" / "__init__.py"
    assert pathlib.Path(oqcompile.passes.__file__).resolve() == CHECKOUT / "passes" / "__init__.py"
    assert pathlib.Path(oqcompile.models.__file__).resolve() == CHECKOUT / "models" / "__init__.py"


def test_the_built_op_library_is_found():
    assert ops_library_path().is_file()
