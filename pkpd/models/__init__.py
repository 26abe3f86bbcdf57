"""Structural models. ``load_model(name)`` returns a model from the registry."""

from pkpd.models.library import LIBRARY, LinearPKModel
from pkpd.models.temsirolimus import TemsirolimusModel, temsirolimus

#: Every registered model, by name.
MODELS = {**LIBRARY, "temsirolimus": temsirolimus}


def endpoint_units(model) -> dict[str, str]:
    """Endpoint name → unit of any model (``endpoint_units`` or an ``endpoints`` mapping)."""
    units = getattr(model, "endpoint_units", None)
    if units is not None:
        return dict(units)
    eps = model.endpoints
    return dict(eps) if isinstance(eps, dict) else {e: "" for e in eps}


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


__all__ = ["MODELS", "LinearPKModel", "TemsirolimusModel", "endpoint_units", "load_model"]
