"""A model from a file: ``load_model("mydrug.py")``, ``"mydrug.py:model"`` or
``"package.module:model"``, and the CLI's ``--model FILE.py``.

The file is ordinary Python that builds a :class:`pkpd.models.Model` (e.g. an
:class:`~pkpd.models.ODEModel`, or a subclass of ``Model`` with its own ``predict``); pkpd runs
it as a module, takes the model (the one ``Model`` the module defines at top level, or the one
named after the colon) and registers it under its ``name`` for the rest of the process. A fit of
such a model stores the file's text and its SHA-256 (attributes ``model_source``,
``model_source_sha256``, ``model_source_path``), so that the fit file alone can be simulated,
diagnosed and reported later: :func:`pkpd.inference.posterior.restore_model` runs the stored
text when no model of that name is registered. Like any Python file, a fit file that carries a
model's source runs that code when it is read back: read fit files you trust.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
import traceback
from pathlib import Path

#: Models loaded from files or stored sources in this process: name -> (path, text, sha256).
SOURCES: dict[str, tuple[str, str, str]] = {}
#: (resolved path, sha256, attribute) of each file already run -> the model's name: loading an
#: unchanged file again (the CLI, a fit and its priors each ask for it) does not rerun it.
_LOADED: dict[tuple[str, str, str | None], str] = {}


class ModelFileError(ValueError):
    """A model file or module that cannot give a model; the message says what and where."""


def looks_like_model_file(name) -> bool:
    """``"x.py"``, ``"x.py:attr"`` or ``"package.module:attr"`` (not a registry name)."""
    if not isinstance(name, (str, Path)):
        return False
    text = str(name)
    path = text.rsplit(":", 1)[0] if ":" in text and not Path(text).exists() else text
    return path.endswith(".py") or (":" in text and "/" not in text and " " not in text)


def _split(spec: str) -> tuple[str, str | None]:
    if Path(spec).exists():
        return spec, None
    if ":" in spec:
        target, attr = spec.rsplit(":", 1)
        return target, attr or None
    return spec, None


def _pick(namespace: dict, attr: str | None, where: str):
    from pkpd.models.base import Model

    if attr is not None:
        if attr not in namespace:
            raise ModelFileError(f"{where} has no attribute {attr!r}")
        model = namespace[attr]
        if not isinstance(model, Model):
            raise ModelFileError(
                f"{where}: {attr} is a {type(model).__name__}, not a pkpd model (a "
                "pkpd.models.Model, e.g. an ODEModel)"
            )
        return model
    found = {k: v for k, v in namespace.items() if isinstance(v, Model) and not k.startswith("_")}
    distinct = {id(v): k for k, v in found.items()}
    if not distinct:
        raise ModelFileError(
            f"{where} defines no pkpd model at top level; build one there, e.g. "
            "model = ODEModel(name=..., states=..., params=..., outputs=..., rhs=..., "
            "observe=..., doses=...)"
        )
    if len(distinct) > 1:
        names = ", ".join(sorted(distinct.values()))
        raise ModelFileError(
            f"{where} defines several models ({names}); say which one, e.g. {where}:"
            f"{sorted(distinct.values())[0]}"
        )
    return next(iter(found.values()))


def _run_source(text: str, path: str, module_name: str) -> dict:
    """Run a model file's text as module ``module_name``; its namespace."""
    import types

    module = types.ModuleType(module_name)
    module.__file__ = path
    sys.modules[module_name] = module  # dataclasses and pickling-free lookups need it
    try:
        code = compile(text, path, "exec")
        exec(code, module.__dict__)  # noqa: S102 - running the user's own model file is the point
    except SyntaxError as e:
        sys.modules.pop(module_name, None)
        raise ModelFileError(
            f"model file {path}, line {e.lineno}: syntax error: {e.msg}; fix the file"
        ) from None
    except Exception as e:  # the file's own error, reported at its line
        sys.modules.pop(module_name, None)
        frames = [f for f in traceback.extract_tb(e.__traceback__) if f.filename == path]
        line = f", line {frames[-1].lineno}" if frames else ""
        raise ModelFileError(
            f"model file {path}{line}: {type(e).__name__}: {e}; fix the file (it runs as "
            "ordinary Python when pkpd loads it)"
        ) from None
    return module.__dict__


def load_model_file(spec: str):
    """The model of a file or module (see the module docstring), registered by its name.

    Raises
    ------
    ModelFileError
        A file that does not exist, does not run, or defines no model or several, each named
        with the file and what to write instead.
    """
    from pkpd.models import _BUNDLED, register

    target, attr = _split(str(spec))
    if target.endswith(".py") or Path(target).exists():
        path = Path(target)
        if not path.is_file():
            raise ModelFileError(f"model file {target} does not exist")
        text = path.read_text(encoding="utf-8")
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        key = (str(path.resolve()), sha, attr)
        from pkpd.models import MODELS

        if key in _LOADED and _LOADED[key] in MODELS:
            return MODELS[_LOADED[key]]
        namespace = _run_source(text, str(path), f"pkpd_model_file_{sha[:16]}")
        where = str(path)
    else:
        try:
            module = importlib.import_module(target)
        except Exception as e:
            raise ModelFileError(
                f"model module {target} cannot be imported: {type(e).__name__}: {e}"
            ) from None
        namespace, where = vars(module), target
        file = getattr(module, "__file__", None)
        text = Path(file).read_text(encoding="utf-8") if file else ""
        sha = hashlib.sha256(text.encode("utf-8")).hexdigest()
        path = Path(file) if file else Path(target)
    model = _pick(namespace, attr, where)
    if model.name in _BUNDLED:
        raise ModelFileError(
            f"{where}: the model is called {model.name!r}, the name of a bundled pkpd model; "
            "give it another name"
        )
    register(model, replace=True)
    SOURCES[model.name] = (str(path), text, sha)
    if target.endswith(".py") or Path(target).exists():
        _LOADED[(str(path.resolve()), sha, attr)] = model.name
    return model


def restore_model_source(name: str, path: str, text: str, sha: str):
    """Rebuild and register the model ``name`` from a fit's stored source text."""
    if hashlib.sha256(text.encode("utf-8")).hexdigest() != sha:
        raise ModelFileError(
            f"the fit's stored source of model {name!r} does not match its SHA-256: the fit "
            "file was changed; refit, or load the model file first (pkpd.models.load_model)"
        )
    from pkpd.models import register
    from pkpd.models.base import Model

    namespace = _run_source(text, f"{path} (stored in the fit)", f"pkpd_fit_model_{sha[:16]}")
    models = [v for v in namespace.values() if isinstance(v, Model) and v.name == name]
    if not models:
        raise ModelFileError(f"the fit's stored model source defines no model called {name!r}")
    register(models[0], replace=True)
    SOURCES[name] = (path, text, sha)
    return models[0]


__all__ = ["ModelFileError", "SOURCES", "load_model_file", "looks_like_model_file"]
