"""Import a script from benchmarks/ (not a package) by its path, without editing sys.path."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType

from tests.helpers.paths import BENCHMARKS


def load_benchmark(name: str) -> ModuleType:
    """benchmarks/<name>.py as a module (imported once, registered as `benchmarks_<name>`)."""
    module_name = f"benchmarks_{name}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickle look a class's module up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module
