r"""The model contract: what every pkpd model is and offers.

Fits (:func:`pkpd.fit`), simulations (:func:`pkpd.simulate`), predictions, the data reader and
the diagnostics use a model only through this contract, never through a concrete class or an
endpoint's name: a model written outside pkpd that subclasses :class:`Model` is fitted,
simulated and reported like the bundled ones.

A model is an immutable value (a frozen dataclass is the usual form, registered as a static
pytree node so it can be closed over by ``jax.jit``) with

required
    ``name`` (str; the registry name for bundled models); :attr:`Model.parameters` (name →
    unit of every parameter the current endpoints need); :attr:`Model.endpoint_units`
    (endpoint → unit); :attr:`Model.compartments` (NONMEM compartment number → name);
    :meth:`Model.predict` (pure JAX: ``jit``, ``vmap`` and ``grad`` must work through it).

optional, with defaults here
    which parameters must be given (:attr:`~Model.structural_parameters`) and which exist at
    all (:attr:`~Model.all_parameters`); which endpoints are drug concentrations
    (:attr:`~Model.concentration_endpoints`, with the volume scaling each:
    :attr:`~Model.concentration_volumes`); DVID codes and molar masses of the endpoints;
    parameter and subject checks; :meth:`~Model.with_endpoints` (a variant predicting fewer
    endpoints) and :attr:`~Model.costly_endpoints` (which ones are worth skipping for subjects
    without their data); :meth:`~Model.with_dose_kinds` (a variant told which dose kinds the
    data hold); :meth:`~Model.precompute` (static arrays computed once from the data);
    :attr:`~Model.hill_levels` (IC50–Hill pairs NUTS samples through their level);
    :meth:`~Model.modal_form` (a fast form for simulation, :class:`ModalForm`);
    :meth:`~Model.combined_concentrations` and :meth:`~Model.response_metrics` (the model's own
    exposure and response metrics in simulations).

Units follow pkpd's canonical ones (time h, amounts mg, volumes L, clearances L/h) unless a
parameter's or endpoint's unit says otherwise.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Turnover:
    r"""A response state integrated along the modal form: ``dy/dt = production(c) − loss(c)·y``.

    ``c`` is the modal output named ``driver`` (floored at 0), ``y(0) = baseline``. Both VEGF's
    indirect response (loss constant) and PD-1's bounded turnover (loss depends on ``c``) take
    this form; the simulation engine steps it by an exponential integrator with the loss rate
    frozen at its step average (:mod:`pkpd.simulate.engines`).
    """

    driver: str
    baseline: Any
    rates: Callable[[Any], tuple[Any, Any]]


@dataclass(frozen=True)
class ModalForm:
    r"""The linear part of a model as modes, for fast exact simulation.

    Every output is ``coef · x`` with modal states ``dx_m/dt = −poles_m·x_m + u(t)``, ``u`` the
    dose input (mg/h; boluses add to every ``x_m``) into the default dose compartment.

    Attributes
    ----------
    poles : array [M]
        Rate constants (1/h).
    outputs : dict of str to array [M]
        Coefficients of every concentration endpoint (in its unit per mg) and of any auxiliary
        output (e.g. a PD driver or an effect-site concentration).
    direct : dict of str to (str, callable)
        Endpoints computed pointwise from one output: ``{endpoint: (output, f)}``, the
        endpoint's value ``f(output value)`` (e.g. an Imax model on an effect site).
    turnover : dict of str to Turnover
        Endpoints that are turnover states driven by an output.
    """

    poles: Any
    outputs: dict[str, Any]
    direct: dict[str, tuple[str, Callable]] = field(default_factory=dict)
    turnover: dict[str, Turnover] = field(default_factory=dict)


@dataclass(frozen=True)
class MetricSpec:
    """A model's own per-subject simulation metric (:meth:`Model.response_metrics`).

    ``kind``: ``"inhibition_trough"`` (100 − the endpoint just before the dose ending
    ``window``: ``"c1"``, the first dosing interval, or ``"ss"``, the last full one),
    ``"change_pct"`` (``100·(y(time_h)/y(0) − 1)``) or ``"change_abs"`` (``y(time_h) − y(0)``).
    """

    endpoint: str
    kind: str
    units: str
    long_name: str
    window: str | None = None
    time_h: float | None = None


#: The intervals a metric's ``window`` names, as the metric descriptions say them.
METRIC_WINDOWS = {
    "c1": "cycle 1 (the first dosing interval)",
    "ss": "steady state (the last full dosing interval of the horizon)",
}

#: Compartment names that mean "an absorption depot" (doses by mouth): :attr:`Model.dose_route`.
ABSORPTION_COMPARTMENTS = ("depot", "gut", "absorption", "oral")


def known_endpoints(model: str, wanted: Sequence[str], available: Sequence[str]) -> tuple[str, ...]:
    """``wanted`` as a tuple, or ``ValueError`` naming the endpoints ``model`` does not predict
    (and what it does predict); an empty selection is refused too."""
    eps = tuple(wanted)
    unknown = [e for e in eps if e not in available]
    if unknown or not eps:
        raise ValueError(
            f"model {model!r}: unknown endpoint(s) {unknown or list(eps)}; it predicts "
            f"{', '.join(available)}"
        )
    return eps


class Model(abc.ABC):
    """Base class of every pkpd model (the contract: module docstring).

    Subclasses provide ``name``, :attr:`parameters`, :attr:`endpoint_units`,
    :attr:`compartments` and :meth:`predict`; everything else has a working default.
    """

    name: str

    # -- description (required) -------------------------------------------------------------
    @property
    @abc.abstractmethod
    def parameters(self) -> dict[str, str]:
        """Name → unit of every parameter the model's current endpoints use."""

    @property
    @abc.abstractmethod
    def endpoint_units(self) -> dict[str, str]:
        """Endpoint → unit of every endpoint the model currently predicts."""

    @property
    @abc.abstractmethod
    def compartments(self) -> dict[int, str]:
        """NONMEM compartment number → name."""

    @abc.abstractmethod
    def predict(self, params: Mapping[str, Any], subject) -> dict[str, Any]:
        """Every endpoint at each prediction point of one subject (no leading axis).

        Returns ``{endpoint: array [P]}`` in :attr:`endpoint_units`, optionally with ``"ok"``
        (a boolean scalar, False where a numerical solve failed: the fit's log density is then
        −inf). Pure JAX: ``jax.jit``, ``jax.vmap`` and ``jax.grad`` must work through it.
        """

    # -- description (optional) -------------------------------------------------------------
    @property
    def endpoints(self) -> tuple[str, ...]:
        """Names of the endpoints the model currently predicts."""
        return tuple(self.endpoint_units)

    @property
    def structural_parameters(self) -> tuple[str, ...]:
        """Parameters that must be given (a prior or a value); default all of them."""
        return tuple(self.parameters)

    @property
    def all_parameters(self) -> dict[str, str]:
        """Every parameter the model knows, whichever endpoints are on (priors may name them)."""
        return dict(self.parameters)

    @property
    def concentration_endpoints(self) -> tuple[str, ...]:
        """Endpoints that are drug concentrations (simulations give their Cmax, Ctrough, AUC;
        a zero prediction under a log-scale residual is reported before a fit)."""
        return ()

    @property
    def concentration_volumes(self) -> dict[str, str]:
        """Concentration endpoint → the volume parameter (L) that scales it (the data-unit
        check before a fit compares ``dose/C`` with it)."""
        return {}

    @property
    def endpoint_codes(self) -> dict[int, str] | None:
        """DVID code → endpoint; ``None``: a one-endpoint model takes the data's one code."""
        return None

    @property
    def endpoint_molar_masses(self) -> dict[str, float]:
        """Molar mass (g/mol) of the drug each concentration endpoint measures (to read
        molar units); empty when unknown."""
        return {}

    @property
    def costly_endpoints(self) -> tuple[str, ...]:
        """Endpoints worth predicting only for subjects with data on them (a fit groups
        subjects by them, each group calling :meth:`with_endpoints`)."""
        return ()

    @property
    def hill_levels(self) -> dict[str, tuple[str, str | None]]:
        """``{ic50: (hill, scale)}``: IC50s NUTS samples through their Hill-scaled level."""
        return {}

    @property
    def dose_compartment_names(self) -> tuple[str, ...]:
        """Compartments that take doses, by name (dose modifiers ``f_<name>`` etc.)."""
        return ()

    @property
    def default_dose_compartment(self) -> int:
        """The compartment a dose with ``CMT`` 0 or missing goes into."""
        return 1

    @property
    def dose_route(self) -> str:
        """How a dose into :attr:`default_dose_compartment` is given: ``"oral"`` when that
        compartment is an absorption depot (named one of :data:`ABSORPTION_COMPARTMENTS`),
        else ``"iv"``. A regimen simulated from the model's fits must have this route
        (:func:`pkpd.simulate` puts every dose into the default compartment)."""
        name = self.compartments.get(self.default_dose_compartment, "")
        return "oral" if str(name).lower() in ABSORPTION_COMPARTMENTS else "iv"

    @property
    def default_priors(self) -> Mapping[str, Any] | None:
        """The model's own priors, as the parsed form of a priors file: a mapping with the
        tables ``model``, ``parameters`` and ``residual`` (schema: the priors documentation).
        A fit given no priors file uses them when pkpd bundles none for the model, and
        ``pkpd priors --model`` writes them out. Default ``None`` (no declarations)."""
        return None

    @property
    def occasion_parameters(self) -> tuple[str, ...]:
        """Parameters that may change from one occasion to the next (inter-occasion
        variability). :meth:`predict` takes each of them as a scalar or as ``[O]`` (one value
        per occasion of ``subject``: its ``point_occ``, ``dose_occ``, ``occ_start``, ... fields,
        :class:`pkpd.data.arrays.SubjectData`), and says in its docstring what happens to drug
        given in one occasion and still present in the next. Default: none (a fit with an
        ``iov`` prior on a parameter not listed here is refused before sampling)."""
        return ()

    # -- variants -----------------------------------------------------------------------------
    def with_endpoints(self, endpoints: Sequence[str]) -> Model:
        """The model predicting only ``endpoints``; default: the model itself, which must then
        predict exactly those."""
        known_endpoints(self.name, endpoints, self.endpoints)
        return self

    def with_dose_kinds(self, kinds: tuple | None) -> Model:
        """The model told which dose kinds the data hold (:func:`pkpd.pk.analytic.kinds_in_data`)
        so it can skip the formulas of the others; default: the model itself."""
        return self

    # -- checks (outside jit) -----------------------------------------------------------------
    def check_parameters(self, params: Mapping[str, object]) -> None:
        """Raise ``ValueError`` naming unknown or missing parameters (static check)."""
        unknown = sorted(set(params) - set(self.all_parameters))
        missing = [p for p in self.structural_parameters if p not in params]
        if unknown or missing:
            problems = [
                x
                for x in (
                    f"unknown parameter(s) {', '.join(unknown)}" if unknown else "",
                    f"missing parameter(s) {', '.join(missing)}" if missing else "",
                )
                if x
            ]
            raise ValueError(
                f"model {self.name!r}: {'; '.join(problems)}. Its parameters are: "
                + ", ".join(f"{k} ({u})" for k, u in self.parameters.items())
            )

    def check_subject(self, subject) -> list[str]:
        """Problems that make predictions meaningless for these subjects (one or a padded
        batch), e.g. doses into a compartment the model cannot dose; empty when none."""
        return []

    def occasion_problems(self, subjects, line) -> list[str]:
        """Problems that keep parameters per occasion from being exact on these data (a padded
        batch with occasions; ``line(row)`` gives a record's data line); checked by a fit with
        inter-occasion variability before sampling. Default none."""
        return []

    # -- optional precomputation and fast forms -----------------------------------------------
    def precompute(self, subjects):
        """Arrays computed once from the (padded, trimmed) data of a fit's subjects and passed
        to :meth:`predict` as ``subject.grid``; ``None`` (default) when there are none."""
        return None

    def modal_form(self, params: Mapping[str, Any]) -> ModalForm | None:
        """The model as modes (:class:`ModalForm`) for fast simulation of doses into the
        default compartment, or ``None`` (default) when it has none: simulations then call
        :meth:`predict`. Parameters are scalars for one subject."""
        return None

    def modal_parameters_supported(self, parameters: Sequence[str]) -> bool:
        """Whether :meth:`modal_form` reproduces :meth:`predict` with these parameters given
        (e.g. not with dose modifiers such as a lag time); default: when it has a modal form."""
        return False

    # -- simulation metrics ---------------------------------------------------------------------
    def combined_concentrations(self, endpoints: Sequence[str]) -> dict[str, dict]:
        """Concentrations derived from several endpoints for the simulation's metrics:
        ``{name: {"units": ..., "long_name": ..., "terms": {endpoint: factor}}}``, the value
        ``Σ factor · endpoint`` (e.g. a molar sum of parent and metabolite); default none."""
        return {}

    def response_metrics(self, endpoints: Sequence[str], horizon_h: float) -> dict[str, MetricSpec]:
        """The model's own response metrics in simulations (:class:`MetricSpec`), for the
        simulated ``endpoints`` over ``horizon_h``; default none (concentration endpoints
        always get Cmax, Ctrough and AUC)."""
        return {}


def check_model(model) -> None:
    """Raise ``TypeError`` naming what ``model`` lacks of the contract (:class:`Model`)."""
    if not isinstance(model, Model):
        raise TypeError(
            f"{type(model).__name__} is not a pkpd model: subclass pkpd.models.Model "
            "(name, parameters, endpoint_units, compartments, predict)"
        )
    if not isinstance(getattr(model, "name", None), str) or not model.name:
        raise TypeError(f"{type(model).__name__}: a model needs a non-empty str name")


__all__ = ["MetricSpec", "ModalForm", "Model", "Turnover", "check_model"]


def occasion_count(name: str, params, subject, modifiers) -> int:
    """The number of occasions of one subject whose parameters are given per occasion, for
    models that carry drug over occasion boundaries in closed form: raises ``ValueError`` when
    the subject's data have no occasions, or when a modelled lag, rate or duration (among the
    ``modifiers`` given in ``params``) could carry a dose across a boundary."""
    if getattr(subject, "occ_start", None) is None:
        raise ValueError(
            f"model {name!r}: parameters given per occasion, but the subject's data "
            "have no occasions (an OCC column, or occasions derived from the doses)"
        )
    timed = [m for m in modifiers if m in params and not m.startswith("f_")]
    if timed:
        raise ValueError(
            f"model {name!r}: parameters per occasion with modelled {', '.join(timed)} "
            "are not supported (a lag or a modelled infusion can carry a dose across an "
            "occasion boundary); give lags and infusion times in the data"
        )
    return subject.occ_start.shape[0]


def occasion_values(parameter: str, value, n_occ: int):
    """``value`` of ``parameter`` for a subject with ``n_occ`` occasions, as ``[n_occ]``: a
    scalar is broadcast to every occasion, one value per occasion is kept; any other shape
    raises ``ValueError`` naming the parameter."""
    import jax.numpy as jnp

    v = jnp.asarray(value, dtype=float)
    if v.ndim > 1 or (v.ndim == 1 and v.shape[0] != n_occ):
        raise ValueError(
            f"parameter {parameter!r} has shape {tuple(v.shape)}; expected a scalar or one "
            f"value per occasion, ({n_occ},)"
        )
    return jnp.broadcast_to(v, (n_occ,))


def infusions_across_occasions(name: str, subjects, line) -> list[str]:
    """The problem of infusions (``RATE`` or ``DUR`` in the data) still running when the next
    occasion starts, for models that carry drug over an occasion boundary as amounts (which
    cannot hold a running input); ``line(row)`` gives a record's data line. Padded subjects
    with occasions; an empty list when there are none."""
    d = subjects
    rate, dur, amt = np.asarray(d.dose_rate), np.asarray(d.dose_dur), np.asarray(d.dose_amt)
    length = np.where(rate > 0, amt / np.where(rate > 0, rate, 1.0), np.where(dur > 0, dur, 0.0))
    end = np.asarray(d.dose_time) + length
    n_occ = np.shape(d.occ_start)[1]
    nxt_i = np.minimum(np.asarray(d.dose_occ) + 1, n_occ - 1)
    nxt = np.take_along_axis(np.asarray(d.occ_start), nxt_i, axis=1)
    real_next = np.take_along_axis(np.asarray(d.occ_valid), nxt_i, axis=1) & (
        np.asarray(d.dose_occ) + 1 < n_occ
    )
    bad = np.asarray(d.dose_mask) & real_next & (length > 0) & (end > nxt + 1e-9)
    if not bad.any():
        return []
    rows = sorted(set(np.asarray(d.dose_row)[bad].tolist()))
    return [
        f"infusions still running when the next occasion starts (data lines "
        f"{', '.join(str(line(r)) for r in rows)}); model {name!r} with parameters per "
        "occasion needs an occasion to start after the infusions before it end (start the "
        "occasion later, or at the infusion's start)"
    ]
