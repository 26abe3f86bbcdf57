"""Structural models. ``load_model(name)`` returns a model from the registry."""

from pkpd.models.library import LIBRARY, LinearPKModel
from pkpd.models.temsirolimus import TemsirolimusModel, temsirolimus

#: Every registered model, by name.
MODELS = {**LIBRARY, "temsirolimus": temsirolimus}


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


__all__ = ["MODELS", "LinearPKModel", "TemsirolimusModel", "load_model"]
