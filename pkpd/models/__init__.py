"""Structural models. ``load_model(name)`` returns a model from the registry."""

from pkpd.models.base import MetricSpec, ModalForm, Model, Turnover, check_model
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


#: Every registered model, by name.
MODELS = _discover()


def endpoint_units(model) -> dict[str, str]:
    """Endpoint name → unit of a model (:attr:`Model.endpoint_units`)."""
    return dict(model.endpoint_units)


def load_model(name: str):
    """Return the registered model called ``name``.

    Raises
    ------
    ValueError
        For an unknown name, listing the known ones.

    Examples
    --------
    >>> load_model("two_cmt_oral").compartments
    {1: 'depot', 2: 'central', 3: 'peripheral'}
    """
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}"
        ) from None


__all__ = [
    "MODELS",
    "LinearPKModel",
    "MetricSpec",
    "ModalForm",
    "Model",
    "TemsirolimusModel",
    "Turnover",
    "check_model",
    "endpoint_units",
    "load_model",
]
