"""Structural models. ``load_model(name)`` returns a model from the registry."""

from pkpd.models import blocks
from pkpd.models.base import MetricSpec, ModalForm, Model, Turnover, check_model
from pkpd.models.blocks import BlockModel, build
from pkpd.models.equations import ODEModel
from pkpd.models.library import LinearPKModel
from pkpd.models.temsirolimus import TemsirolimusModel


def _discover() -> dict:
    """Every model a module of this package lists in its ``REGISTERED`` tuple, by name: a new
    bundled model is its own module here (plus its priors file), nothing else."""
    import importlib
    import pkgutil

    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        for model in getattr(module, "REGISTERED", ()):
            check_model(model)
            if model.name in found:
                raise RuntimeError(f"two bundled models are called {model.name!r}")
            found[model.name] = model
    return found


#: Every registered model, by name (the bundled ones, then any added by :func:`register`).
MODELS = _discover()
_BUNDLED = frozenset(MODELS)


def register(model, *, replace: bool = False):
    """Add a model of your own (a :class:`Model`) to the registry of this process, so that
    everything that finds a model by name (``load_model``, a fit file read back by
    :func:`pkpd.simulate`, the diagnostics and the report) finds it. Returns the model.

    Raises ``TypeError`` for an object that is not a :class:`Model`, ``ValueError`` for a name
    already taken (unless ``replace=True``; a bundled model cannot be replaced).
    """
    check_model(model)
    if model.name in _BUNDLED:
        raise ValueError(f"{model.name!r} is a bundled pkpd model; give your model another name")
    if model.name in MODELS and not replace:
        raise ValueError(
            f"a model called {model.name!r} is already registered; pass replace=True to replace it"
        )
    MODELS[model.name] = model
    return model


def endpoint_units(model) -> dict[str, str]:
    """Endpoint name → unit of a model (:attr:`Model.endpoint_units`)."""
    return dict(model.endpoint_units)


def load_model(name: str):
    """Return the registered model called ``name``, or the model of a Python file or module:
    ``"mydrug.py"``, ``"mydrug.py:model"``, ``"package.module:model"``
    (:mod:`pkpd.models.files`; the model is then registered under its own name).

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones; a model file that does not exist, does not
        run or defines no model (:class:`pkpd.models.files.ModelFileError`, a ``ValueError``).

    Examples
    --------
    >>> load_model("two_cmt_oral").compartments
    {1: 'depot', 2: 'central', 3: 'peripheral'}
    """
    from pkpd.models.files import load_model_file, looks_like_model_file

    if isinstance(name, str) and name in MODELS:
        return MODELS[name]
    if looks_like_model_file(name):
        return load_model_file(str(name))
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))} (or a Python "
            "file defining one: --model mydrug.py)"
        ) from None


__all__ = [
    "MODELS",
    "BlockModel",
    "LinearPKModel",
    "MetricSpec",
    "ModalForm",
    "Model",
    "ODEModel",
    "TemsirolimusModel",
    "blocks",
    "build",
    "Turnover",
    "check_model",
    "endpoint_units",
    "load_model",
    "register",
]
