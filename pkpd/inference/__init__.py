"""Inference: priors, hierarchy, likelihoods, fitting."""

from pkpd.inference.priors import Priors, PriorsError, load_priors

__all__ = ["Priors", "PriorsError", "load_priors"]
