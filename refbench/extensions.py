"""Objectives named by import path, as ``[method] objective = "my_losses:my_dpo"``.

A name without a colon is a built-in (``refbench.method.objectives.OBJECTIVES``). With a colon,
the part before it is a module (importable from ``sys.path`` or the working directory, as
``python -m`` would find it) or a ``.py`` file path, the part after it a function
``fn(forward, method, **params) -> PreferenceLoss``; ``preference_objective`` on the function
says whether it needs a reference and trains on winners only. Every failure is one
``ConfigError`` line naming ``method.objective``.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import sys
from pathlib import Path

from .errors import ConfigError
from .method.objectives import OBJECTIVES, Objective, objective_from_function

__all__ = ["resolve_objective", "check_params", "objective_names"]


def objective_names() -> list[str]:
    return sorted(OBJECTIVES)


def _import(module_name: str):
    if module_name.endswith(".py"):
        path = Path(module_name).expanduser()
        if not path.is_file():
            raise ConfigError(f"method.objective: no file {path}")
        spec = importlib.util.spec_from_file_location(f"refbench_objective_{path.stem}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    cwd = str(Path.cwd())
    added = cwd not in sys.path
    if added:  # the working directory, as `python -m` and `python script.py` users expect
        sys.path.insert(0, cwd)
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"method.objective: cannot import module {module_name!r} ({exc}); "
            "put it on PYTHONPATH or in the working directory, or give a .py file path"
        ) from None
    finally:
        if added:
            sys.path.remove(cwd)


def resolve_objective(name: str) -> Objective:
    """The objective ``method.objective`` names: a built-in or ``module:function``."""
    if ":" not in name:
        if name not in OBJECTIVES:
            raise ConfigError(
                f"method.objective: must be a built-in objective ({', '.join(objective_names())}) "
                f"or a function of your own as 'module:function'; got {name!r}"
            )
        return OBJECTIVES[name]
    module_name, _, function_name = name.rpartition(":")
    if not module_name or not function_name:
        raise ConfigError(f"method.objective: must read 'module:function' (e.g. 'my_losses:my_dpo'); got {name!r}")
    try:
        module = _import(module_name)
    except ConfigError:
        raise
    except Exception as exc:  # the user's module failed while importing: say so in one line
        raise ConfigError(f"method.objective: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from None
    fn = getattr(module, function_name, None)
    if not callable(fn):
        raise ConfigError(f"method.objective: module {module_name!r} has no function {function_name!r}")
    return objective_from_function(name, fn)


def check_params(objective: Objective, params: dict) -> None:
    """A built-in takes its knobs from ``method`` fields; an external one must accept every
    ``[method.params]`` key as a keyword argument."""
    if objective.builtin:
        if params:
            knobs = ", ".join(f"method.{f}" for f in objective.reads) or "none"
            raise ConfigError(
                f"method.params: must be empty for the built-in {objective.name} objective (its knobs: "
                f"{knobs}; params are for an objective named 'module:function'); got {params!r}"
            )
        return
    try:
        inspect.signature(objective.fn).bind(None, None, **params)
    except TypeError as exc:
        raise ConfigError(
            f"method.params: {objective.name} cannot take them ({exc}); it is called as fn(forward, method, **params)"
        ) from None
