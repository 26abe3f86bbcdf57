r"""A PK/PD model composed from blocks: :func:`build`, :class:`PK`, :class:`Metabolite`,
:class:`Direct`, :class:`IndirectResponse`, :class:`BoundedTurnover`, :class:`ActiveMoiety`,
:class:`Metric`.

A pharmacometrician states the structure, pkpd writes the equations::

    from pkpd.models import blocks

    model = blocks.build(
        "theo_idr",
        blocks.PK(compartments=1, absorption="first_order", code=1),
        blocks.IndirectResponse("marker", kind=1, unit="U/L", code=2),
        typical={"cl": 3.0, "v": 30.0, "ka": 1.2, "marker_base": 100.0,
                 "marker_kout": 0.2, "marker_imax": 0.8, "marker_ic50": 2000.0},
    )

``model`` is a :class:`~pkpd.models.Model` like the bundled ones: ``pkpd.fit(model, data)``
samples it (with the priors ``typical`` implies when no priors file is given),
``pkpd.simulate`` simulates its fits, and a file defining it is accepted wherever a model name
is (``pkpd fit data.csv --model mydrug.py``).

**PK** (:class:`PK`; amounts mg, volumes L, clearances L/h, time h). Compartments, in the
data's ``CMT`` numbering (a chain's order, as in NONMEM)::

    transit_1 … transit_n   (transit=n, first_order only; doses go to transit_1)
    transit                 (transit="estimated": the whole chain, n estimated; doses go here)
    depot                   (first_order)
    central, peripheral (2 compartments) or peripheral1, peripheral2 (3)
    <metabolite>            (metabolite=Metabolite(...))

Equations (``C = A_central/V`` in mg/L; ``V`` is ``v`` for one compartment, ``v1`` otherwise)::

    dA_transit_1/dt = −ktr·A_transit_1,   dA_transit_i/dt = ktr·(A_transit_i−1 − A_transit_i)
    dA_depot/dt     = ktr·A_transit_n − ka·A_depot          (ktr = n/mtt)
    dA_central/dt   = ka·A_depot − E(C) − Σp Qp·(C − A_p/Vp)
    dA_p/dt         = Qp·(C − A_p/Vp)                       (Q1 = q, V_p = v2; Q2 = q2, V_p = v3)
    E(C)            = cl·C  (linear) | vmax·C/(km + C)  (michaelis_menten) | both (mixed)
    dA_m/dt         = fm·E(C)·MW_m/MW_p − (cl_m/v_m)·A_m    (metabolite "m", one compartment)

``binding=True``: saturable binding in blood (Langmuir; :mod:`pkpd.pk.binding`). ``C`` is then
the whole-blood concentration (the endpoint); distribution and elimination act on
``r0·C_u`` instead, ``C_u`` the unbound concentration solving
``C = (1 + kns)·C_u + bmax·C_u/(kd + C_u)`` and ``r0 = 1 + kns + bmax/kd``, so that ``cl`` is
the whole-blood clearance at low concentrations and exposure rises less than proportionally
with dose as binding saturates (parameters ``bmax``, ``kd`` in the PK's unit, ``kns``; the
``"ode"`` engine).

``mtt`` is the mean time a dose spends in the chain of ``n`` transit compartments (n/ktr;
Savic et al., J Pharmacokinet Pharmacodyn 2007;34:711, write the same chain with n+1
compartments as MTT = (n+1)/ktr).

``transit="estimated"``: the number of transit compartments is a parameter, ``ntr`` (> 0, not
necessarily whole), as in Savic et al. (2007): a dose ``D`` (after lag time and
bioavailability) given at ``t_d`` reaches the depot at the rate
``D·ktr·(ktr·τ)^ntr·exp(−ktr·τ)/Γ(ntr + 1)``, ``τ = t − t_d``, ``ktr = (ntr + 1)/mtt`` (a
gamma density of delays with mean ``mtt``; an infusion's input is that density integrated over
its duration, a difference of regularised incomplete gamma functions). ``ntr`` counts the
compartments after the one the dose enters, as Savic does: ``ntr = 2`` is the chain
``transit=3``. The state ``transit`` holds the drug still on its way
(``dA_transit/dt = −`` the rate above; doses go into it). The delay is a function of each
dose's time, not of states, so ``mtt`` and ``ntr`` cannot change between occasions.

The concentration endpoint (``PK.endpoint``, default ``"conc"``) is ``C`` in ``PK.unit``
(default ng/mL = 1000·mg/L); the metabolite's is ``A_m/v_m`` in its unit. Dose modifiers as
in the linear models: ``lag_<cmt>`` (h) and ``f_<cmt>`` (bioavailability) for the first
compartment and the central one (``PK(lag=True, bioavailability=True)`` makes those of the
first compartment parameters to estimate).

**PD blocks** (each is one endpoint; its parameters are prefixed with its name, or with
``prefix=`` when given). The driver is a concentration endpoint (``driver="conc"`` or the
metabolite's name), in its unit, or an :class:`ActiveMoiety`: a weighted sum of
concentration endpoints in one unit (``ActiveMoiety("active", {"conc": 1.0, "m1":
"potency"}, unit="nM")``; a weight that is a name is a parameter, e.g. a relative potency; a
molar unit needs the molar masses of ``Metabolite(molar_masses=...)``).
``effect_compartment=True`` puts an effect site between them, ``dCe/dt = ke0·(C − Ce)``, and
the block is driven by ``Ce``. Drug effects ``S = emax·f(C)``, ``I = imax·f(C)``,
``f(C) = C^h/(C50^h + C^h)`` (``h = <name>_hill`` when ``hill=True`` or a sigmoid form,
else 1).

* :class:`Direct`: ``emax``: ``E = e0 + emax·f(C)``; ``imax``: ``E = e0·(1 − I)``
  (``sigmoid_emax``, ``sigmoid_imax`` with a Hill coefficient); ``baseline=100.0`` fixes
  ``e0`` (a response in % of each subject's baseline) instead of estimating it.
* :class:`IndirectResponse` (Dayneka, Garg & Jusko, J Pharmacokinet Biopharm
  1993;21:457): ``dR/dt = kin·(1 − I) − kout·R`` (I), ``kin − kout·(1 − I)·R`` (II),
  ``kin·(1 + S) − kout·R`` (III), ``kin − kout·(1 + S)·R`` (IV), ``R(0) = base``,
  ``kin = base·kout``; ``turnover="mrt"`` estimates ``mrt = 1/kout`` (h) instead of ``kout``.
* :class:`BoundedTurnover` (a percentage that stays in (0, 100)):
  ``dP/dt = kin·(1 − I)·(100 − P) − kout·P``, ``kin = kout·base/(100 − base)``.

**Engines**, chosen from the structure (:attr:`BlockModel.engine` says which):

* ``"analytic"``: linear PK (no transit chain, linear elimination; a metabolite's
  compartment is one more exponential mode, :func:`pkpd.pk.polyexp.convolve`) and only direct
  PD without an effect site. The closed forms of the linear models (NONMEM's dose events,
  ``SS``, ``ADDL``, ``RATE`` -1/-2 included), the PD applied to their concentrations; exact.
  With a metabolite, doses go into the parent's compartments (dosing the metabolite's needs
  ``solver="ode"``).
* ``"grid"``: linear PK with effect sites or turnover PD. The concentration and an effect
  site are closed forms (the effect site is one more exponential mode); turnover states are
  stepped by the exponential integrator of :mod:`pkpd.pd.forced` on a dose-aware grid
  (every dose and infusion end a node), within ~1e-5 relative of a tight scipy solve
  (measured 1.5e-6 to 1.5e-5 in the tests). Data with steady-state doses or resets make the
  prediction fail (``ok`` False) rather than start the turnover at its baseline.
* ``"ode"``: everything else (transit chains, Michaelis–Menten elimination, binding), or
  ``build(..., solver="ode")``: diffrax through the dose history
  (:class:`~pkpd.models.ODEModel`; rtol 1e-8; steady-state doses and ``RATE`` -1/-2 refused
  by the ``ok`` flag).

**Parameters per occasion** (inter-occasion variability): parameters change at an occasion's
first record and every state present then moves on under the new occasion's values (NONMEM's
convention). With closed-form PK the whole linear chain — the PK compartments, the metabolite
and each effect site — is carried over in closed form (Sylvester's propagator on the chain's
poles, :func:`pkpd.pk.analytic.occasion_superpose`); concentrations and direct effects take
the values of each point's occasion; turnover states are driven by the occasion each grid time
falls in, every occasion start a node of their grid. A turnover block's own parameters
(baseline, kout, its potency) per occasion take the ``"ode"`` engine.

**Simulation** (:func:`pkpd.simulate`): with closed-form PK the model's modal form
(:meth:`BlockModel.modal_form`: the concentrations, drivers and effect sites as exponential
modes, direct effects pointwise, turnover states stepped on the simulation grid) is stepped
exactly for the PK, within ~1e-5 for turnover states; every concentration endpoint gets Cmax,
Ctrough and AUC per cycle, and so does an ``ActiveMoiety(..., exposure=True)``; a PD block
adds the metrics it lists (``metrics=``, :class:`Metric`: trough inhibition, change from
baseline at a time or at the horizon).

``pkpd.models.temsirolimus.from_blocks()`` is the flagship model written with these blocks
(the same parameters and predictions as the hand-wired class, at the same cost per gradient:
benchmarks/RESULTS.md).

A fit with the ``"ode"`` engine is much slower (an adaptive solve per subject and dose
interval inside every gradient) and has no quick fit (``method="map"``); the other two are
as fast as the built-in models.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from pkpd.models.base import (
    METRIC_WINDOWS,
    Model,
    known_endpoints,
    occasion_count,
    occasion_values,
)
from pkpd.pd.direct import hill_fraction, remaining_fraction

__all__ = [
    "PK",
    "Metabolite",
    "Direct",
    "IndirectResponse",
    "BoundedTurnover",
    "ActiveMoiety",
    "Metric",
    "BlockModel",
    "build",
    "from_definition",
]

#: Residual error models an endpoint may declare (the priors file's ``residual.model``).
ERRORS = ("additive", "proportional", "combined", "lognormal", "logit")
_ABSORPTION = ("iv", "first_order")
_ELIMINATION = ("linear", "michaelis_menten", "mixed")
_DIRECT_FORMS = ("emax", "sigmoid_emax", "imax", "sigmoid_imax")
_KINDS = {1: 1, 2: 2, 3: 3, 4: 4, "I": 1, "II": 2, "III": 3, "IV": 4}
_TURNOVER = ("kout", "mrt")

# A parameter's scale class, for its default prior: positive (log), fraction or percent (logit).
_POS, _FRAC, _PCT = "positive", "fraction", "percent"


class BlockError(ValueError):
    """A block given an option it does not have, or blocks that do not fit together."""


def _choice(block: str, option: str, value, allowed) -> None:
    if value not in allowed:
        raise BlockError(
            f"{block}: {option}={value!r} is not an option; expected one of "
            + ", ".join(repr(a) for a in allowed)
        )


def _check_error(block: str, error: str) -> None:
    _choice(block, "error", error, ERRORS)


def _name_ok(block: str, name) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise BlockError(f"{block}: name {name!r} must be an identifier (letters, digits, _)")


@dataclass(frozen=True)
class Metabolite:
    """A metabolite formed from a fraction ``fm`` of the parent's elimination, one compartment
    (parameters ``fm``, ``cl_<name>`` L/h, ``v_<name>`` L; ``prefix="m"`` names them
    ``cl_m``, ``v_m`` instead). ``molar_masses=(parent, metabolite)`` in g/mol converts the
    parent's mg into the metabolite's (default: mass for mass). Its concentration is the
    endpoint ``name`` in ``unit`` (default: the parent's)."""

    name: str = "metabolite"
    molar_masses: tuple[float, float] | None = None
    unit: str | None = None
    code: int | None = None
    error: str = "combined"
    additive: float = 1.0
    prefix: str | None = None

    @property
    def key(self) -> str:
        """What its parameters end with (``cl_<key>``, ``v_<key>``): ``prefix``, else its
        name."""
        return self.prefix or self.name

    def __post_init__(self):
        _name_ok("Metabolite", self.name)
        if self.prefix is not None:
            _name_ok("Metabolite", self.prefix)
        _check_error("Metabolite", self.error)
        if self.molar_masses is not None:
            mm = tuple(float(x) for x in self.molar_masses)
            if len(mm) != 2 or min(mm) <= 0:
                raise BlockError(
                    f"Metabolite: molar_masses must be (parent, metabolite) in g/mol, > 0; got "
                    f"{self.molar_masses!r}"
                )
            object.__setattr__(self, "molar_masses", mm)

    @property
    def ratio(self) -> float:
        return 1.0 if self.molar_masses is None else self.molar_masses[1] / self.molar_masses[0]


@dataclass(frozen=True)
class PK:
    """The PK block (module docstring): ``compartments`` 1–3, ``absorption`` ``"iv"`` or
    ``"first_order"``, ``transit`` (a fixed number of transit compartments ahead of the depot, or
    ``"estimated"``: their number is the parameter ``ntr``),
    ``elimination`` ``"linear"``, ``"michaelis_menten"`` or ``"mixed"``, ``lag`` and
    ``bioavailability`` (estimate them for doses into the first compartment), ``metabolite``,
    ``binding`` (saturable binding in blood: module docstring).
    The concentration endpoint is ``endpoint`` in ``unit`` (a mass concentration: ng/mL, mg/L,
    ...), with DVID ``code``, residual ``error`` and, for its default prior, the scale of its
    additive error ``additive`` (in ``unit``)."""

    compartments: int = 1
    absorption: str = "iv"
    transit: int | str = 0
    elimination: str = "linear"
    lag: bool = False
    bioavailability: bool = False
    metabolite: Metabolite | None = None
    endpoint: str = "conc"
    unit: str = "ng/mL"
    code: int | None = None
    error: str = "combined"
    additive: float = 1.0
    binding: bool = False

    def __post_init__(self):
        if self.binding not in (True, False):
            raise BlockError(f"PK: binding={self.binding!r}; expected True or False")
        if self.compartments not in (1, 2, 3):
            raise BlockError(f"PK: compartments={self.compartments!r}; expected 1, 2 or 3")
        _choice("PK", "absorption", self.absorption, _ABSORPTION)
        _choice("PK", "elimination", self.elimination, _ELIMINATION)
        if self.transit != "estimated" and (
            not isinstance(self.transit, int) or isinstance(self.transit, bool) or self.transit < 0
        ):
            raise BlockError(
                f"PK: transit={self.transit!r}; expected a whole number >= 0 or 'estimated' "
                "(the number of transit compartments a parameter, ntr)"
            )
        if self.transit and self.absorption != "first_order":
            raise BlockError(
                "PK: transit compartments lead into an absorption depot; write "
                "absorption='first_order' with transit=..."
            )
        _name_ok("PK", self.endpoint)
        _check_error("PK", self.error)
        if self.metabolite is not None and not isinstance(self.metabolite, Metabolite):
            raise BlockError("PK: metabolite must be a blocks.Metabolite(...)")
        _scale(self.unit, "PK")

    # -- structure ----------------------------------------------------------------------------
    @property
    def volume(self) -> str:
        return "v" if self.compartments == 1 else "v1"

    @property
    def states(self) -> tuple[str, ...]:
        if self.transit == "estimated":
            chain: tuple[str, ...] = ("transit",)
        else:
            chain = tuple(f"transit_{i + 1}" for i in range(self.transit))
        depot = ("depot",) if self.absorption == "first_order" else ()
        periph = {1: (), 2: ("peripheral",), 3: ("peripheral1", "peripheral2")}[self.compartments]
        met = (self.metabolite.name,) if self.metabolite is not None else ()
        return chain + depot + ("central",) + periph + met

    @property
    def linear(self) -> bool:
        """A structure the analytic engine of the linear models predicts alone."""
        return self.closed_form and self.metabolite is None

    @property
    def closed_form(self) -> bool:
        """Linear PK without a transit chain: every unit-dose response is a sum of exponentials
        (a metabolite's compartment adds one mode, :func:`pkpd.pk.polyexp.convolve`)."""
        return self.elimination == "linear" and not self.transit and not self.binding

    def metabolite_parameters(self) -> tuple[str, ...]:
        m = self.metabolite
        return () if m is None else ("fm", f"cl_{m.key}", f"v_{m.key}")

    def parameters(self) -> dict[str, tuple[str, str]]:
        out: dict[str, tuple[str, str]] = {}
        if self.elimination in ("linear", "mixed"):
            out["cl"] = ("L/h", _POS)
        if self.elimination in ("michaelis_menten", "mixed"):
            out["vmax"] = ("mg/h", _POS)
            out["km"] = ("mg/L", _POS)
        out[self.volume] = ("L", _POS)
        if self.compartments >= 2:
            out.update(q=("L/h", _POS), v2=("L", _POS))
        if self.compartments == 3:
            out.update(q2=("L/h", _POS), v3=("L", _POS))
        if self.absorption == "first_order":
            out["ka"] = ("1/h", _POS)
        if self.transit:
            out["mtt"] = ("h", _POS)
        if self.transit == "estimated":
            out["ntr"] = ("1", _POS)
        m = self.metabolite
        if m is not None:
            out.update(
                {"fm": ("1", _FRAC), f"cl_{m.key}": ("L/h", _POS), f"v_{m.key}": ("L", _POS)}
            )
        first = self.states[0]
        if self.lag:
            out[f"lag_{first}"] = ("h", _POS)
        if self.bioavailability:
            out[f"f_{first}"] = ("1", _FRAC)
        if self.binding:
            out.update(bmax=(self.unit, _POS), kd=(self.unit, _POS), kns=("1", _POS))
        return out

    def concentrations(self) -> dict[str, tuple[str, str]]:
        """Concentration endpoint → (unit, volume parameter)."""
        out = {self.endpoint: (self.unit, self.volume)}
        if self.metabolite is not None:
            m = self.metabolite
            out[m.name] = (m.unit or self.unit, f"v_{m.key}")
        return out

    def rhs(self, y, p, scale, delivered=0.0) -> tuple[dict, dict]:
        """Derivatives of the PK states and the concentrations (in their endpoint units);
        ``delivered``: for ``transit="estimated"``, the rate (mg/h) at which the chain's drug
        reaches the depot now (:func:`_transit_delivery`)."""
        d = {}
        blood = y["central"] / p[self.volume]  # mg/L (whole blood with binding)
        conc = blood
        if self.binding:  # distribution and elimination act on r0·C_u
            from pkpd.pk.binding import unbound_from_blood

            to_mg_l = 1.0 / scale[self.endpoint]
            bmax, kd = p["bmax"] * to_mg_l, p["kd"] * to_mg_l
            unbound = unbound_from_blood(jnp.maximum(blood, 0.0), bmax, kd, p["kns"])
            conc = (1.0 + p["kns"] + bmax / kd) * unbound
        if self.transit == "estimated":
            d["transit"] = -delivered
            into_depot = delivered
        elif self.transit:
            ktr = self.transit / p["mtt"]
            prev = 0.0
            for i in range(self.transit):
                s = f"transit_{i + 1}"
                d[s] = prev - ktr * y[s]
                prev = ktr * y[s]
            into_depot = prev
        else:
            into_depot = 0.0
        d_central = 0.0
        if self.absorption == "first_order":
            d["depot"] = into_depot - p["ka"] * y["depot"]
            d_central = p["ka"] * y["depot"]
        elimination = 0.0
        if self.elimination in ("linear", "mixed"):
            elimination = elimination + p["cl"] * conc
        if self.elimination in ("michaelis_menten", "mixed"):
            elimination = elimination + p["vmax"] * conc / (p["km"] + conc)
        d_central = d_central - elimination
        for s, q, v in (
            ("peripheral", "q", "v2"),
            ("peripheral1", "q", "v2"),
            ("peripheral2", "q2", "v3"),
        ):
            if s in y:
                flow = p[q] * (conc - y[s] / p[v])
                d[s] = flow
                d_central = d_central - flow
        d["central"] = d_central
        concs = {self.endpoint: scale[self.endpoint] * blood}
        m = self.metabolite
        if m is not None:
            am = y[m.name]
            d[m.name] = p["fm"] * elimination * m.ratio - p[f"cl_{m.key}"] / p[f"v_{m.key}"] * am
            concs[m.name] = scale[m.name] * am / p[f"v_{m.key}"]
        return d, concs


def _scale(unit: str, where: str) -> float:
    """mg/L → ``unit`` (a mass concentration)."""
    from pkpd.data.reader import unit_factor

    try:
        return float(unit_factor("mg/L", unit))
    except ValueError as e:
        raise BlockError(
            f"{where}: unit {unit!r} is not a mass concentration (amounts are in mg and volumes in "
            f"L); write e.g. 'ng/mL' or 'mg/L' ({e})"
        ) from None


_METRIC_KINDS = ("inhibition_trough", "change_pct", "change_abs")


@dataclass(frozen=True)
class Metric:
    """A response metric a PD block reports for every virtual subject of :func:`pkpd.simulate`
    (besides the endpoint's profile), e.g. ``Direct("s6k", ..., metrics=["inhibition_trough"])``.

    ``kind``:

    * ``"inhibition_trough"``: ``100 − y`` just before the dose that ends the first dosing
      interval (``<name>_c1``) and the last full one of the horizon (``<name>_ss``), in %;
      for an endpoint in ``"% of baseline"`` only.
    * ``"change_pct"``: ``100·(y(t)/y(0) − 1)`` (%) at ``t = at_h``.
    * ``"change_abs"``: ``y(t) − y(0)`` at ``t = at_h``, in the endpoint's unit (percentage
      points for one in %).

    ``at_h`` (h): the time of a change; ``None`` (default) is the horizon of the simulation;
    a time past the horizon leaves the metric out. ``name``: default ``<endpoint>_<kind>``.
    ``description``: what the metric means, in the user's words (the ``long_name`` of its
    variable in the simulation's output; a trough inhibition's gets the dosing interval
    appended); default, one written from the kind, endpoint and time.
    A kind alone (``"change_pct"``) or a mapping of these fields stands for a ``Metric``.
    """

    kind: str
    name: str | None = None
    at_h: float | None = None
    description: str | None = None

    def __post_init__(self):
        _choice("Metric", "kind", self.kind, _METRIC_KINDS)
        if self.name is not None:
            _name_ok("Metric", self.name)
        if self.at_h is not None:
            try:
                at = float(self.at_h)
            except (TypeError, ValueError):
                at = float("nan")
            if not at > 0 or self.kind == "inhibition_trough":
                raise BlockError(
                    f"Metric {self.kind!r}: at_h={self.at_h!r}; expected a time > 0 (h) for a "
                    "change, or None (the horizon); a trough inhibition takes none"
                )
            object.__setattr__(self, "at_h", at)
        if self.description is not None and (
            not isinstance(self.description, str) or not self.description.strip()
        ):
            raise BlockError(
                f"Metric {self.kind!r}: description={self.description!r}; expected a non-empty "
                "text (the metric's long name in the simulation's output)"
            )

    def names(self, endpoint: str) -> tuple[str, ...]:
        base = self.name or f"{endpoint}_{self.kind}"
        if self.kind == "inhibition_trough":
            return (f"{base}_c1", f"{base}_ss")
        return (base,)

    def specs(self, endpoint: str, unit: str, horizon_h: float) -> dict:
        """Metric name → :class:`pkpd.models.base.MetricSpec` for a simulation to
        ``horizon_h``."""
        from pkpd.models.base import MetricSpec

        if self.kind == "inhibition_trough":
            return {
                name: MetricSpec(
                    endpoint=endpoint,
                    kind=self.kind,
                    units="%",
                    long_name=(
                        f"{self.description}, at the trough ending {METRIC_WINDOWS[tag]}"
                        if self.description
                        else f"{endpoint} inhibition (100 - {endpoint} in % of the subject's "
                        f"baseline) at the trough ending {METRIC_WINDOWS[tag]}"
                    ),
                    window=tag,
                )
                for name, tag in zip(self.names(endpoint), METRIC_WINDOWS, strict=True)
            }
        if self.at_h is not None and self.at_h > horizon_h + 1e-9:
            return {}
        t = horizon_h if self.at_h is None else self.at_h
        when = f"the horizon ({t:g} h)" if self.at_h is None else f"{t:g} h"
        if self.kind == "change_pct":
            units, formula = "%", f"100*({endpoint}(t)/{endpoint}(0) - 1)"
        else:
            units = "percentage points" if unit.strip() == "%" else unit
            formula = f"{endpoint}(t) - {endpoint}(0), in {units}"
        return {
            self.names(endpoint)[0]: MetricSpec(
                endpoint=endpoint,
                kind=self.kind,
                units=units,
                long_name=self.description
                or f"{endpoint} change from baseline at {when}: {formula}",
                time_h=t,
            )
        }


def _metric(block: str, value) -> Metric:
    if isinstance(value, Metric):
        return value
    if isinstance(value, str):
        return Metric(value)
    if isinstance(value, Mapping):
        return Metric(**dict(value))
    raise BlockError(
        f"{block}: metric {value!r}; expected a kind ({', '.join(_METRIC_KINDS)}) or "
        "blocks.Metric(kind, name=..., at_h=..., description=...)"
    )


@dataclass(frozen=True)
class _PDBlock:
    """What every PD block has: its endpoint ``name`` and ``unit``, the concentration endpoint
    or :class:`ActiveMoiety` that drives it, an optional effect site, a Hill coefficient,
    DVID ``code``, residual ``error``, the scale of its additive error (``additive``, for the
    default prior) and ``prefix`` (what its parameters' names start with; default its
    name)."""

    def _common_checks(self, kind: str):
        _name_ok(kind, self.name)
        _check_error(kind, self.error)
        _name_ok(kind, self.driver)
        if self.prefix is not None:
            _name_ok(kind, self.prefix)
        if isinstance(self.metrics, (str, Metric, Mapping)):
            object.__setattr__(self, "metrics", (self.metrics,))
        metrics = tuple(_metric(f"{kind} {self.name!r}", m) for m in self.metrics)
        object.__setattr__(self, "metrics", metrics)
        for m in metrics:
            if m.kind == "inhibition_trough" and self.unit.strip().lower() != "% of baseline":
                raise BlockError(
                    f"{kind} {self.name!r}: metric 'inhibition_trough' (100 - the endpoint) "
                    f"needs the endpoint in '% of baseline', not {self.unit!r} (e.g. "
                    "Direct(..., unit='% of baseline', baseline=100.0)); report a change instead"
                )

    @property
    def key(self) -> str:
        """What the block's parameter names start with: ``prefix``, else its endpoint's name."""
        return self.prefix or self.name

    def driven_by(self, c, y, p):
        return y[f"{self.name}_ce"] if self.effect_compartment else c

    def effect_site(self) -> dict[str, tuple[str, str]]:
        return {f"{self.key}_ke0": ("1/h", _POS)} if self.effect_compartment else {}

    @property
    def states(self) -> tuple[str, ...]:
        return (f"{self.name}_ce",) if self.effect_compartment else ()

    def site_rhs(self, c, y, p) -> dict:
        if not self.effect_compartment:
            return {}
        ce = y[f"{self.name}_ce"]
        return {f"{self.name}_ce": p[f"{self.key}_ke0"] * (c - ce)}

    def _fraction(self, c, p, c50: str):
        h = p[f"{self.key}_hill"] if self.uses_hill else 1.0
        return hill_fraction(c, p[f"{self.key}_{c50}"], h)

    def _remaining(self, c, p):
        h = p[f"{self.key}_hill"] if self.uses_hill else 1.0
        return remaining_fraction(c, p[f"{self.key}_imax"], p[f"{self.key}_ic50"], h)

    def _kout(self, p):
        if self.turnover == "mrt":
            return 1.0 / p[f"{self.key}_mrt"]
        return p[f"{self.key}_kout"]

    def _turnover_parameter(self) -> dict[str, tuple[str, str]]:
        return (
            {f"{self.key}_mrt": ("h", _POS)}
            if self.turnover == "mrt"
            else {f"{self.key}_kout": ("1/h", _POS)}
        )


@dataclass(frozen=True)
class Direct(_PDBlock):
    """A direct effect of the driver (module docstring): ``form`` ``"emax"`` (parameters
    ``<name>_e0``, ``<name>_emax`` in ``unit``, ``<name>_ec50`` in the driver's unit),
    ``"imax"`` (``<name>_e0``, ``<name>_imax`` a fraction, ``<name>_ic50``), their sigmoid
    forms (plus ``<name>_hill``)."""

    name: str
    form: str = "emax"
    unit: str = ""
    driver: str = "conc"
    effect_compartment: bool = False
    code: int | None = None
    error: str = "additive"
    additive: float = 1.0
    baseline: float | None = None
    prefix: str | None = None
    metrics: tuple = ()

    def __post_init__(self):
        self._common_checks("Direct")
        _choice("Direct", "form", self.form, _DIRECT_FORMS)
        if self.baseline is not None:
            try:
                object.__setattr__(self, "baseline", float(self.baseline))
            except (TypeError, ValueError):
                raise BlockError(
                    f"Direct {self.name!r}: baseline={self.baseline!r}; expected a number (the "
                    "fixed E0, e.g. 100 for a response in % of baseline) or None to estimate it"
                ) from None

    @property
    def uses_hill(self) -> bool:
        return self.form.startswith("sigmoid")

    @property
    def inhibits(self) -> bool:
        return self.form.endswith("imax")

    def parameters(self, driver_unit: str) -> dict[str, tuple[str, str]]:
        n = self.key
        out = {} if self.baseline is not None else {f"{n}_e0": (self.unit, _POS)}
        if self.inhibits:
            out.update({f"{n}_imax": ("1", _FRAC), f"{n}_ic50": (driver_unit, _POS)})
        else:
            out.update({f"{n}_emax": (self.unit, _POS), f"{n}_ec50": (driver_unit, _POS)})
        if self.uses_hill:
            out[f"{n}_hill"] = ("1", _POS)
        return {**out, **self.effect_site()}

    def observe(self, c, y, p):
        return self.effect(self.driven_by(c, y, p), p)

    def effect(self, c, p):
        """The effect at driver ``c`` (the concentration, or the effect site's)."""
        e0 = self.baseline if self.baseline is not None else p[f"{self.key}_e0"]
        if self.inhibits:
            return e0 * self._remaining(c, p)
        return e0 + p[f"{self.key}_emax"] * self._fraction(c, p, "ec50")

    def initial(self, p) -> dict:
        return {}

    def rhs(self, c, y, p) -> dict:
        return self.site_rhs(c, y, p)


class _Turnover(_PDBlock):
    """What the turnover blocks share: one state (the endpoint, starting at ``<name>_base``)
    that is linear in itself given the driver, ``dy/dt = a(C) − b(C)·y`` (:meth:`forced`),
    which both the ODE engine (:meth:`rhs`) and the grid engine use."""

    @property
    def uses_hill(self) -> bool:
        return self.hill

    @property
    def states(self) -> tuple[str, ...]:
        return super().states + (self.name,)

    def initial(self, p) -> dict:
        return {self.name: p[f"{self.key}_base"]}

    def rhs(self, c, y, p) -> dict:
        a, b = self.forced(self.driven_by(c, y, p), p)
        return {**self.site_rhs(c, y, p), self.name: a - b * y[self.name]}

    def observe(self, c, y, p):
        return y[self.name]


@dataclass(frozen=True)
class IndirectResponse(_Turnover):
    """An indirect response of type ``kind`` I–IV (module docstring): parameters
    ``<name>_base`` (``unit``), ``<name>_kout`` (1/h, or ``<name>_mrt`` h with
    ``turnover="mrt"``), ``<name>_imax`` and ``<name>_ic50`` (I, II) or ``<name>_emax``
    (a multiple of the baseline rate) and ``<name>_ec50`` (III, IV); ``hill=True`` adds
    ``<name>_hill``."""

    name: str
    kind: int | str = 1
    unit: str = ""
    driver: str = "conc"
    effect_compartment: bool = False
    hill: bool = False
    turnover: str = "kout"
    code: int | None = None
    error: str = "proportional"
    additive: float = 1.0
    prefix: str | None = None
    metrics: tuple = ()

    def __post_init__(self):
        self._common_checks("IndirectResponse")
        k = self.kind.upper() if isinstance(self.kind, str) else self.kind
        if k not in _KINDS:
            raise BlockError(
                f"IndirectResponse {self.name!r}: kind={self.kind!r}; expected 1, 2, 3 or 4 "
                "(or 'I'..'IV')"
            )
        object.__setattr__(self, "kind", _KINDS[k])
        _choice("IndirectResponse", "turnover", self.turnover, _TURNOVER)

    def parameters(self, driver_unit: str) -> dict[str, tuple[str, str]]:
        n = self.key
        out = {f"{n}_base": (self.unit, _POS), **self._turnover_parameter()}
        if self.kind in (1, 2):
            out.update({f"{n}_imax": ("1", _FRAC), f"{n}_ic50": (driver_unit, _POS)})
        else:
            out.update({f"{n}_emax": ("1", _POS), f"{n}_ec50": (driver_unit, _POS)})
        if self.hill:
            out[f"{n}_hill"] = ("1", _POS)
        return {**out, **self.effect_site()}

    def forced(self, c, p):
        """``(a, b)`` of ``dR/dt = a − b·R`` at driver ``c`` (the grid engine's form)."""
        kout = self._kout(p)
        kin = p[f"{self.key}_base"] * kout
        if self.kind in (1, 2):
            rem = self._remaining(c, p)
            return (
                (kin * rem, kout * jnp.ones_like(c))
                if self.kind == 1
                else (kin * jnp.ones_like(c), kout * rem)
            )
        stim = 1.0 + p[f"{self.key}_emax"] * self._fraction(c, p, "ec50")
        return (
            (kin * stim, kout * jnp.ones_like(c))
            if self.kind == 3
            else (kin * jnp.ones_like(c), kout * stim)
        )


@dataclass(frozen=True)
class BoundedTurnover(_Turnover):
    """A percentage kept in (0, 100) by its turnover (module docstring): parameters
    ``<name>_base`` (%), ``<name>_kout`` (or ``<name>_mrt``), ``<name>_imax``, ``<name>_ic50``
    (``hill=True``: ``<name>_hill``). Its unit is ``"%"``."""

    name: str
    driver: str = "conc"
    effect_compartment: bool = False
    hill: bool = False
    turnover: str = "kout"
    code: int | None = None
    error: str = "logit"
    additive: float = 1.0
    prefix: str | None = None
    metrics: tuple = ()
    unit: str = field(default="%", init=False)

    def __post_init__(self):
        self._common_checks("BoundedTurnover")
        _choice("BoundedTurnover", "turnover", self.turnover, _TURNOVER)

    def parameters(self, driver_unit: str) -> dict[str, tuple[str, str]]:
        n = self.key
        out = {
            f"{n}_base": ("%", _PCT),
            **self._turnover_parameter(),
            f"{n}_imax": ("1", _FRAC),
            f"{n}_ic50": (driver_unit, _POS),
        }
        if self.hill:
            out[f"{n}_hill"] = ("1", _POS)
        return {**out, **self.effect_site()}

    def forced(self, c, p):
        """``(a, b)`` of ``dP/dt = a − b·P`` at driver ``c`` (the grid engine's form)."""
        kout = self._kout(p)
        base = p[f"{self.key}_base"]
        g = kout * base / (100.0 - base) * self._remaining(c, p)
        return 100.0 * g, g + kout


@dataclass(frozen=True)
class ActiveMoiety:
    """A PD driver that sums concentration endpoints, e.g. a parent and its active metabolite:
    ``ActiveMoiety("active", {"parent": 1.0, "m1": "potency"}, unit="nM")`` is
    ``C_active = 1·C_parent + potency·C_m1``, each concentration converted to ``unit`` first.
    A weight is a number or the name of a parameter (unit 1, estimated: a relative potency).
    A molar ``unit`` (nM, µM) needs each endpoint's molar mass
    (``Metabolite(molar_masses=(parent, metabolite))``). PD blocks name it as their ``driver``;
    it is not an endpoint of the data.

    ``exposure=True`` reports the sum in simulations like a concentration endpoint (its Cmax,
    Ctrough and AUC per subject), e.g. the molar sum of a parent and its active metabolite;
    its weights must then be numbers, and no PD block needs to use it."""

    name: str
    terms: Any
    unit: str = "nM"
    exposure: bool = False

    def __post_init__(self):
        _name_ok("ActiveMoiety", self.name)
        items = self.terms.items() if isinstance(self.terms, Mapping) else self.terms
        try:
            items = [tuple(t) for t in items]
        except TypeError:
            items = []
        if not items or any(len(t) != 2 for t in items):
            raise BlockError(
                f"ActiveMoiety {self.name!r}: terms={self.terms!r}; expected a mapping of "
                "concentration endpoints to weights, e.g. {'parent': 1.0, 'm1': 'potency'}"
            )
        clean = []
        for e, w in items:
            _name_ok("ActiveMoiety", e)
            if isinstance(w, str):
                _name_ok("ActiveMoiety", w)
            else:
                try:
                    w = float(w)
                except (TypeError, ValueError):
                    raise BlockError(
                        f"ActiveMoiety {self.name!r}: the weight of {e!r} is {w!r}; expected a "
                        "number or a parameter's name"
                    ) from None
            clean.append((e, w))
        object.__setattr__(self, "terms", tuple(clean))
        if self.exposure not in (True, False):
            raise BlockError(
                f"ActiveMoiety {self.name!r}: exposure={self.exposure!r}; expected True or False"
            )
        named = [w for _, w in clean if isinstance(w, str)]
        if self.exposure and named:
            raise BlockError(
                f"ActiveMoiety {self.name!r}: exposure=True needs numbers as weights (a "
                f"simulation's exposure is a fixed sum), not the parameter(s) {', '.join(named)}"
            )
        from pkpd.data.reader import unit_factor

        try:
            unit_factor(self.unit, "nM", 1.0)
        except ValueError as e:
            raise BlockError(
                f"ActiveMoiety {self.name!r}: unit {self.unit!r} is not a concentration "
                f"(mass or molar, e.g. 'nM' or 'ng/mL'): {e}"
            ) from None

    def parameters(self) -> dict[str, tuple[str, str]]:
        return {w: ("1", _POS) for _, w in self.terms if isinstance(w, str)}

    def factors(self, units: Mapping[str, str], molar_masses: Mapping[str, float]) -> dict:
        """Endpoint → the factor from its unit to the moiety's; raises :class:`BlockError`."""
        from pkpd.data.reader import unit_factor

        out, problems = {}, []
        for e, _ in self.terms:
            if e not in units:
                problems.append(
                    f"{e!r} is not a concentration endpoint (expected one of "
                    + ", ".join(map(repr, units))
                    + ")"
                )
                continue
            try:
                out[e] = float(unit_factor(units[e], self.unit, molar_masses.get(e)))
            except ValueError as err:
                problems.append(
                    f"{e!r} in {units[e]} cannot be converted to {self.unit} ({err}; give the "
                    "molar masses: Metabolite(molar_masses=(parent, metabolite)))"
                )
        if problems:
            raise BlockError(f"ActiveMoiety {self.name!r}: " + "; ".join(problems))
        return out

    def weights(self, p, factors) -> dict:
        """Endpoint → its weight times its unit factor (a parameter's value where named)."""
        return {e: (p[w] if isinstance(w, str) else w) * factors[e] for e, w in self.terms}


_PD_TYPES = (Direct, IndirectResponse, BoundedTurnover)
_MODIFIER_UNITS = {"lag": "h", "f": "1", "dur": "h", "rate": "mg/h"}


@dataclass(frozen=True)
class BlockModel(Model):
    """A model built by :func:`build` (module docstring). Immutable; a static pytree node."""

    name: str
    pk: PK
    pd: tuple = ()
    typical: tuple | None = None
    variability: float | tuple = 0.5
    solver: str = "auto"
    selected: tuple[str, ...] | None = None
    dose_kinds: tuple | None = None
    drivers: tuple = ()
    _engine: Any = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise BlockError("build: the model needs a non-empty name")
        if not isinstance(self.pk, PK):
            raise BlockError(f"build: the first block must be blocks.PK(...), got {self.pk!r}")
        pd = tuple(self.pd)
        for b in pd:
            if not isinstance(b, _PD_TYPES):
                raise BlockError(
                    f"build: {b!r} is not a PD block (Direct, IndirectResponse, BoundedTurnover)"
                )
        object.__setattr__(self, "pd", pd)
        drivers = tuple(self.drivers)
        for d in drivers:
            if not isinstance(d, ActiveMoiety):
                raise BlockError(f"build: {d!r} is not a driver (blocks.ActiveMoiety)")
        object.__setattr__(self, "drivers", drivers)
        _choice("build", "solver", self.solver, ("auto", "ode"))
        problems = self._problems()
        if problems:
            raise BlockError(f"model {self.name!r}: " + "; ".join(problems))
        object.__setattr__(self, "_engine", self._make_engine())

    # -- definition ---------------------------------------------------------------------------
    def _problems(self) -> list[str]:
        out = []
        concs = self.pk.concentrations()
        names = list(concs) + [b.name for b in self.pd] + [d.name for d in self.drivers]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            out.append(
                f"endpoint or driver name(s) {', '.join(dup)} used twice; give each block its "
                "own name"
            )
        moieties = {d.name for d in self.drivers}
        for b in self.pd:
            if b.driver not in concs and b.driver not in moieties:
                out.append(
                    f"PD block {b.name!r}: driver {b.driver!r} is not a concentration endpoint "
                    f"or an ActiveMoiety (expected one of "
                    f"{', '.join(map(repr, [*concs, *moieties]))})"
                )
        units = {e: u for e, (u, _) in concs.items()}
        for d in self.drivers:
            try:
                d.factors(units, self.endpoint_molar_masses)
            except BlockError as e:
                out.append(str(e))
        declared = [list(self.pk.parameters())]
        declared += [list(b.parameters("1")) for b in self.pd]
        declared += [list(d.parameters()) for d in self.drivers]
        flat = [p for group in declared for p in group]
        shared = sorted({p for p in flat if flat.count(p) > 1})
        if shared:
            out.append(
                f"parameter name(s) {', '.join(shared)} declared by more than one block (a PD "
                "block's parameters start with its prefix= or name; an ActiveMoiety's weights "
                "are named by you): give each its own name"
            )
        metric_names = [n for b in self.pd for m in b.metrics for n in m.names(b.name)]
        twice = sorted({n for n in metric_names if metric_names.count(n) > 1})
        if twice:
            out.append(f"metric name(s) {', '.join(twice)} used twice; give each Metric a name=")
        codes = [c for c in self._codes_all().values()]
        if any(c is None for c in codes) and any(c is not None for c in codes) and len(codes) > 1:
            missing = [e for e, c in self._codes_all().items() if c is None]
            out.append(
                f"DVID code(s) given for some endpoints but not for {', '.join(missing)}: give "
                "every block a code= (or none, and name endpoints in an ENDPOINT column)"
            )
        given = [c for c in codes if c is not None]
        if len(set(given)) != len(given):
            out.append(f"DVID codes {given} repeat; each endpoint needs its own code")
        if not out and self.typical is not None:
            known = self._all_declared()
            typ = dict(self.typical)
            unknown = sorted(set(typ) - set(known))
            missing = [p for p in known if p not in typ]
            if unknown:
                out.append(
                    f"typical names {', '.join(unknown)}, which the model does not have (its "
                    f"parameters: {', '.join(known)})"
                )
            if missing:
                out.append(f"typical lacks a value for {', '.join(missing)}")
            if isinstance(self.variability, tuple):
                odd = sorted(k for k, _ in self.variability if k not in known)
                if odd:
                    out.append(f"variability names {', '.join(odd)}, which the model does not have")
            for p, v in typ.items():
                if p in known and not _in_support(known[p][1], v):
                    out.append(f"typical {p}={v!r} is outside its range ({_SUPPORT[known[p][1]]})")
        return out

    def _codes_all(self) -> dict[str, int | None]:
        out = {self.pk.endpoint: self.pk.code}
        if self.pk.metabolite is not None:
            out[self.pk.metabolite.name] = self.pk.metabolite.code
        out.update({b.name: b.code for b in self.pd})
        return out

    def _units_all(self) -> dict[str, str]:
        out = {e: u for e, (u, _) in self.pk.concentrations().items()}
        out.update({b.name: b.unit for b in self.pd})
        return out

    def _driver_units(self) -> dict[str, str]:
        out = {e: u for e, (u, _) in self.pk.concentrations().items()}
        out.update({d.name: d.unit for d in self.drivers})
        return out

    def _all_declared(self) -> dict[str, tuple[str, str]]:
        units = self._driver_units()
        out = self.pk.parameters()
        for d in self.drivers:
            out.update(d.parameters())
        for b in self.pd:
            out.update(b.parameters(units[b.driver]))
        return out

    def _needed_drivers(self):
        used = {b.driver for b in self._needed_blocks()}
        return [d for d in self.drivers if d.name in used]

    def _driver_factors(self) -> dict[str, dict]:
        units = {e: u for e, (u, _) in self.pk.concentrations().items()}
        return {d.name: d.factors(units, self.endpoint_molar_masses) for d in self.drivers}

    @property
    def engine(self) -> str:
        """How :meth:`predict` computes (module docstring): ``"analytic"`` (closed forms),
        ``"grid"`` (closed-form PK, turnover PD on a dose-aware grid) or ``"ode"`` (diffrax)."""
        if not self.engine_is_analytic:
            return "ode"
        return "grid" if any(b.states for b in self._needed_blocks()) else "analytic"

    def _analytic_possible(self) -> bool:
        return self.pk.closed_form and self.solver == "auto"

    def _make_engine(self):
        from pkpd.models.library import LinearPKModel

        if self._analytic_possible():
            return LinearPKModel(
                name=self.name,
                n_compartments=self.pk.compartments,
                absorption=self.pk.absorption == "first_order",
                dose_kinds=self.dose_kinds,
            )
        return self._make_ode()

    def _make_ode(self, delivered=None):
        """The model as an :class:`~pkpd.models.ODEModel`; ``delivered(t, p)``: the rate at which
        a ``transit="estimated"`` chain delivers drug to the depot (one subject's doses)."""
        from pkpd.models.equations import ODEModel

        pk, pd = self.pk, tuple(self._needed_blocks())
        if delivered is None and pk.transit == "estimated":  # the structure, before any dose
            none = jnp.zeros((0, 1))
            delivered = _transit_delivery(
                dict(time=none[:, 0], bolus=none, inf_start=none[:, 0], inf_end=none[:, 0],
                     inf_rate=none), 0)  # fmt: skip
        concs = pk.concentrations()
        scale = {e: _scale(u, "PK") for e, (u, _) in concs.items()}
        modifiers = {f"{m}_{c}" for c in self.dose_compartment_names for m in _MODIFIER_UNITS}
        params = {k: u for k, u in self.parameters.items() if k not in modifiers}
        moieties = self._needed_drivers()
        factors = self._driver_factors()

        def with_drivers(c, p):
            for m in moieties:
                w = m.weights(p, factors[m.name])
                c[m.name] = sum(w[e] * c[e] for e in w)
            return c

        def rhs(t, y, p):
            d, c = pk.rhs(y, p, scale, 0.0 if delivered is None else delivered(t, p))
            c = with_drivers(c, p)
            for b in pd:
                d.update(b.rhs(c[b.driver], y, p))
            return d

        def observe(t, y, p):
            _, c = pk.rhs(y, p, scale)  # the concentrations do not depend on the delivery
            c = with_drivers(c, p)
            out = {e: c[e] for e in concs}
            out.update({b.name: b.observe(c[b.driver], y, p) for b in pd})
            return out

        def initial(p):
            out = {}
            for b in pd:
                out.update(b.initial(p))
            return out

        states = pk.states + tuple(s for b in pd for s in b.states)
        return ODEModel(
            name=self.name,
            states=states,
            params=params,
            outputs={
                e: u
                for e, u in self._units_all().items()
                if e in concs or e in {b.name for b in pd}
            },
            rhs=rhs,
            observe=observe,
            doses={i + 1: s for i, s in enumerate(pk.states)},
            initial=initial if any(b.states for b in pd) else None,
            concentrations={e: v for e, (_, v) in concs.items()},
        )

    # -- the contract ---------------------------------------------------------------------------
    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.selected if self.selected is not None else tuple(self._units_all())

    @property
    def endpoint_units(self) -> dict[str, str]:
        units = self._units_all()
        return {e: units[e] for e in self.endpoints}

    @property
    def endpoint_codes(self) -> dict[int, str] | None:
        codes = self._codes_all()
        if all(c is None for c in codes.values()):
            return None
        return {c: e for e, c in codes.items()}

    @property
    def costly_endpoints(self) -> tuple[str, ...]:
        """PD endpoints with a pass over the doses of their own (a turnover state, an effect
        site, an :class:`ActiveMoiety` driver): a fit predicts them only for the subjects with
        data on them."""
        moieties = {d.name for d in self.drivers}
        return tuple(
            b.name
            for b in self.pd
            if isinstance(b, _Turnover) or b.effect_compartment or b.driver in moieties
        )

    @property
    def hill_levels(self) -> dict[str, tuple[str, str | None]]:
        """A Hill coefficient's IC50 (or EC50) is sampled through its Hill-scaled level (as
        the temsirolimus model's S6K IC50); its scale is the relative potency of an
        :class:`ActiveMoiety` driver with one estimated weight."""
        weights = {d.name: [w for _, w in d.terms if isinstance(w, str)] for d in self.drivers}
        out = {}
        for b in self.pd:
            if not b.uses_hill:
                continue
            if isinstance(b, Direct):
                c50 = "ic50" if b.inhibits else "ec50"
            else:
                c50 = "ec50" if getattr(b, "kind", 1) in (3, 4) else "ic50"
            scale = weights.get(b.driver, [])
            out[f"{b.key}_{c50}"] = (f"{b.key}_hill", scale[0] if len(scale) == 1 else None)
        return out

    def _needed_blocks(self):
        return [b for b in self.pd if b.name in self.endpoints]

    @property
    def parameters(self) -> dict[str, str]:
        """Name → unit: the blocks' parameters (:attr:`structural_parameters`), then the dose
        modifiers a priors file may add (``lag_<cmt>``, ``f_<cmt>``; ``dur_``/``rate_`` with
        the closed forms), as for the linear models."""
        out = {p: self._declared_units()[p] for p in self.structural_parameters}
        for m in self._modifier_names():
            out.setdefault(m, _MODIFIER_UNITS[m.split("_")[0]])
        return out

    def _declared_units(self) -> dict[str, str]:
        return {k: u for k, (u, _) in self._all_declared().items()}

    @property
    def structural_parameters(self) -> tuple[str, ...]:
        """The parameters the current endpoints need (each needs a prior or a value)."""
        units = self._driver_units()
        out = list(self.pk.parameters())
        for d in self._needed_drivers():
            out += [p for p in d.parameters() if p not in out]
        for b in self._needed_blocks():
            out += list(b.parameters(units[b.driver]))
        return tuple(out)

    def _modifier_names(self) -> tuple[str, ...]:
        mods = ("lag", "f", "dur", "rate") if self.engine_is_analytic else ("lag", "f")
        return tuple(f"{m}_{c}" for c in self.dose_compartment_names for m in mods)

    @property
    def engine_is_analytic(self) -> bool:
        return self._analytic_possible()

    @property
    def all_parameters(self) -> dict[str, str]:
        out = self._declared_units()
        for m in self._modifier_names():
            out.setdefault(m, _MODIFIER_UNITS[m.split("_")[0]])
        return out

    @property
    def compartments(self) -> dict[int, str]:
        return {i + 1: s for i, s in enumerate(self.pk.states)}

    @property
    def default_dose_compartment(self) -> int:
        return 1

    @property
    def dose_compartment_names(self) -> tuple[str, ...]:
        first = self.pk.states[0]
        return (first,) if first == "central" else (first, "central")

    @property
    def dose_route(self) -> str:
        return "oral" if self.pk.absorption == "first_order" else "iv"

    @property
    def concentration_endpoints(self) -> tuple[str, ...]:
        return tuple(e for e in self.pk.concentrations() if e in self.endpoints)

    @property
    def concentration_volumes(self) -> dict[str, str]:
        return {e: v for e, (_, v) in self.pk.concentrations().items() if e in self.endpoints}

    @property
    def endpoint_molar_masses(self) -> dict[str, float]:
        m = self.pk.metabolite
        if m is None or m.molar_masses is None:
            return {}
        return {self.pk.endpoint: m.molar_masses[0], m.name: m.molar_masses[1]}

    @property
    def occasion_parameters(self) -> tuple[str, ...]:
        mods = set(self._modifier_names())
        if self.pk.transit == "estimated":  # the delay is a function of dose times, not states
            mods |= {"mtt", "ntr"}
        return tuple(p for p in self._all_declared() if p not in mods)

    def with_endpoints(self, endpoints: Sequence[str]) -> BlockModel:
        eps = known_endpoints(self.name, endpoints, tuple(self._units_all()))
        return dataclasses.replace(self, selected=eps)

    def with_dose_kinds(self, kinds: tuple | None) -> BlockModel:
        if not self.engine_is_analytic:
            return self
        return dataclasses.replace(self, dose_kinds=kinds)

    def check_subject(self, subject) -> list[str]:
        """The engine's checks (doses into compartments the model has), and for the grid and
        ODE engines, which start every state from no drug, no steady-state doses or resets."""
        import numpy as np

        problems = list(self._engine.check_subject(subject))
        m = self.pk.metabolite
        if problems and m is not None and self.engine_is_analytic:
            problems = [
                f"{p} (the closed forms dose the parent; to dose the metabolite {m.name!r} "
                "itself, build the model with solver='ode')"
                for p in problems
            ]
        if self.engine != "analytic":
            active = np.asarray(subject.dose_mask, dtype=bool)
            ss = active & (np.asarray(subject.dose_ss) != 0)
            reset = active & np.isin(np.asarray(subject.dose_evid), (3, 4))
            if ss.any() or reset.any():
                problems.append(
                    f"steady-state doses (SS 1/2) or resets (EVID 3/4): model {self.name!r} "
                    f"({self.engine} engine, for its turnover or nonlinear states) starts from no "
                    "drug and cannot put its states at a steady state; give the dose history "
                    "(e.g. ADDL doses before the sampled interval) instead"
                )
        return problems

    def occasion_problems(self, subjects, line) -> list[str]:
        return self._engine.occasion_problems(subjects, line)

    def modal_form(self, params):
        """The model as modes (:class:`pkpd.models.base.ModalForm`) for simulation when its
        PK has closed forms: every concentration endpoint (the metabolite's too) per mg into
        the first compartment, in its unit; each :class:`ActiveMoiety` driver in use; an
        effect site per block that has one (one more mode each, ``<block>:ce``). Direct blocks
        are pointwise functions of their driver, turnover blocks turnover states driven by it.
        ``None`` with integrated PK (the ``"ode"`` engine)."""
        if not self.engine_is_analytic:
            return None
        from pkpd.models.base import ModalForm, Turnover
        from pkpd.pk import polyexp
        from pkpd.pk.analytic import StateResponse

        concs, _ = self._concentration_responses(params)
        poles = next(reversed(concs.values())).poles[0]  # the metabolite's carry every mode
        sources = {k: r.coef[0] for k, r in self._sources(concs, params).items()}
        blocks = self._needed_blocks()
        sites = [b for b in blocks if b.effect_compartment]
        M, K = poles.shape[0], len(sites)
        outputs = {k: jnp.concatenate([c, jnp.zeros(K)]) for k, c in sources.items()}
        site_poles = []
        for j, b in enumerate(sites):
            ke0 = jnp.reshape(params[f"{b.key}_ke0"], (1,))
            r = polyexp.convolve(StateResponse(poles[None], sources[b.driver][None]), ke0, ke0)
            site_poles.append(r.poles[0, M])
            tail = jnp.zeros(K).at[j].set(r.coef[0, M])
            outputs[f"{b.name}:ce"] = jnp.concatenate([r.coef[0, :M], tail])
        if K:
            poles = jnp.concatenate([poles, jnp.stack(site_poles)])

        def driver(b):
            return f"{b.name}:ce" if b.effect_compartment else b.driver

        direct, turnover = {}, {}
        for b in blocks:
            if isinstance(b, Direct):
                direct[b.name] = (driver(b), lambda c, b=b: b.effect(c, params))
            else:
                base = jnp.asarray(params[f"{b.key}_base"], dtype=float)
                turnover[b.name] = Turnover(driver(b), base, lambda c, b=b: b.forced(c, params))
        return ModalForm(poles, outputs, direct, turnover)

    def modal_parameters_supported(self, parameters) -> bool:
        """Closed-form PK without dose modifiers (lag, F, modelled rate or duration) among the
        parameters given."""
        return bool(self.engine_is_analytic and not set(parameters) & set(self._modifier_names()))

    # -- simulation metrics ----------------------------------------------------------------------
    def combined_concentrations(self, endpoints) -> dict[str, dict]:
        """Every :class:`ActiveMoiety` with ``exposure=True`` whose terms are all simulated."""
        factors = self._driver_factors()
        out = {}
        for d in self.drivers:
            if d.exposure and all(e in endpoints for e, _ in d.terms):
                terms = " + ".join(e if w == 1 else f"{w:g}*{e}" for e, w in d.terms)
                out[d.name] = dict(
                    units=d.unit,
                    long_name=f"{terms}, in {d.unit}",
                    terms=d.weights({}, factors[d.name]),
                )
        return out

    def response_metrics(self, endpoints, horizon_h: float) -> dict:
        """The :class:`Metric` values of the PD blocks simulated."""
        out = {}
        for b in self.pd:
            if b.name in endpoints:
                for m in b.metrics:
                    out.update(m.specs(b.name, b.unit, horizon_h))
        return out

    @property
    def default_priors(self) -> Mapping[str, Any] | None:
        if self.typical is None:
            return None
        typ = dict(self.typical)
        params = {}
        spread = dict(self.variability) if isinstance(self.variability, tuple) else None
        for name, (unit, kind) in self._all_declared().items():
            omega = self.variability if spread is None else spread.get(name)
            params[name] = _default_prior(name, unit, kind, typ[name], omega)
        residual = {}
        units = self._units_all()
        errors = {self.pk.endpoint: (self.pk.error, self.pk.additive)}
        if self.pk.metabolite is not None:
            errors[self.pk.metabolite.name] = (
                self.pk.metabolite.error,
                self.pk.metabolite.additive,
            )
        errors.update({b.name: (b.error, b.additive) for b in self.pd})
        for e, (err, add) in errors.items():
            residual[e] = _default_residual(err, units[e], add)
        return {"model": {"name": self.name}, "parameters": params, "residual": residual}

    @property
    def definition(self) -> dict:
        """The blocks as plain values (JSON-ready): :func:`from_definition` rebuilds the model
        from them, so a fit file rebuilds its model without the code that made it."""

        def plain(v):
            if dataclasses.is_dataclass(v):
                return fields_of(v)
            return [plain(x) for x in v] if isinstance(v, tuple) else v

        def fields_of(block):
            out = {f.name: getattr(block, f.name) for f in dataclasses.fields(block) if f.init}
            return {k: plain(v) for k, v in out.items()}

        return {
            "name": self.name,
            "pk": fields_of(self.pk),
            "pd": [{"block": type(b).__name__, **fields_of(b)} for b in self.pd],
            "drivers": [
                {
                    "name": d.name,
                    "terms": [list(t) for t in d.terms],
                    "unit": d.unit,
                    "exposure": d.exposure,
                }
                for d in self.drivers
            ],
            "typical": None if self.typical is None else dict(self.typical),
            "variability": (
                dict(self.variability) if isinstance(self.variability, tuple) else self.variability
            ),
            "solver": self.solver,
        }

    # -- prediction ----------------------------------------------------------------------------
    def predict(self, params, subject):
        """Every endpoint at each point of one subject (``{endpoint: [P], "ok": bool}``).

        Parameters may be given per occasion (``[O]``), as in
        :meth:`pkpd.models.LinearPKModel.predict` and :meth:`pkpd.models.ODEModel.predict`:
        drug present at an occasion's start moves on under the new occasion's values (module
        docstring: the closed forms carry the whole chain; a turnover block's own parameters
        per occasion take the ODE engine).
        """
        if self.engine_is_analytic:
            per_occasion = {
                k for k, v in params.items() if k in self._all_declared() and jnp.ndim(v) == 1
            }
            # the linear engine alone (occasions included) unless a metabolite or a moiety
            # adds modes of its own
            alone = self.pk.metabolite is None and not self.drivers
            if self.engine == "analytic" and alone:
                return self._predict_analytic(params, subject)
            if not per_occasion:
                return self._predict_grid(params, subject)
            if not per_occasion & self._turnover_parameters():
                return self._predict_occasions(params, subject)
        return self._predict_ode(params, subject)

    def _turnover_parameters(self) -> set[str]:
        """The parameters of the turnover blocks in use (their baselines and rate constants
        stay the subject's on the closed-form occasion path)."""
        units = self._driver_units()
        return {
            p
            for b in self._needed_blocks()
            if isinstance(b, _Turnover)
            for p in b.parameters(units[b.driver])
            if not p.endswith("_ke0")
        }

    def _ode(self):
        return self._engine if not self.engine_is_analytic else self._make_ode()

    def _predict_ode(self, params, subject):
        mods = {f"{m}_{c}" for c in self.dose_compartment_names for m in _MODIFIER_UNITS}
        structural = {k: v for k, v in params.items() if k not in mods}
        subject = self._modified_doses(params, subject)
        if self.pk.transit == "estimated":
            from pkpd.pk.nonlinear import dose_inputs

            ode = self._ode()
            index = {s: i for i, s in enumerate(ode.states)}
            ev = dose_inputs(
                subject,
                len(index),
                dose_states={k: index[v] for k, v in ode.doses.items()},
                default_state=index[ode.doses[ode.default_dose_compartment]],
            )
            out = self._make_ode(_transit_delivery(ev, index["transit"])).predict(
                structural, subject
            )
        else:
            out = self._ode().predict(structural, subject)
        return {**{e: out[e] for e in self.endpoints}, "ok": out["ok"]}

    def _pk_params(self, params):
        """The parameters of the parent's PK (and dose modifiers): those of the linear
        engine."""
        names = set(self.pk.parameters()) | set(self._modifier_names())
        names -= set(self.pk.metabolite_parameters())
        return {k: v for k, v in params.items() if k in names}

    def amounts(self, params, subject):
        """Amount (mg) in every PK compartment at each point, ``[P, n]`` (columns in
        :attr:`compartments` order), for PK of the closed forms (:attr:`engine` ``"analytic"``
        or ``"grid"``): :meth:`pkpd.models.LinearPKModel.amounts`, and the metabolite's
        amount as its last column."""
        if not self.engine_is_analytic:
            raise ValueError(
                f"model {self.name!r}: amounts are given by the closed-form engines; this "
                "model's PK is integrated by diffrax (its predict gives the endpoints)"
            )
        parent = self._engine.amounts(self._pk_params(params), subject)
        m = self.pk.metabolite
        if m is None:
            return parent
        from pkpd.pk import analytic

        amount, doses = self._closed_form_amount(params, subject)
        col = analytic.superpose(
            self._metabolite_amount(amount, params),
            doses,
            jnp.asarray(subject.point_time, dtype=float),
            jnp.asarray(subject.point_seq),
            jnp.asarray(subject.point_segment),
            self._engine.dose_kinds,
            getattr(subject, "pairs", None),
        )
        return jnp.concatenate([parent, col[:, None]], axis=-1)

    def _closed_form_amount(self, params, subject=None):
        """The parent's central amount (mg) per mg dosed (a polyexponential response, one row
        per dose compartment) and the subject's dose terms (lags, F, modelled infusions
        applied; None without a subject)."""
        from pkpd.pk import analytic

        lin = self._engine
        pkp = self._pk_params(params)
        lin.check_parameters(pkp)
        sp = lin._structural(pkp)
        state = 1 if self.pk.absorption == "first_order" else 0
        amount = analytic.state_response(lin._disposition(sp), sp.get("ka"), state=state)
        return amount, None if subject is None else lin._doses(pkp, subject)

    def _metabolite_amount(self, amount, params):
        """The metabolite's amount (mg) per mg of parent dosed: formation
        ``fm·cl·A_central/V·MW_m/MW_p`` (mg/h) into a compartment emptied at ``cl_m/v_m``."""
        from pkpd.pk import polyexp

        m = self.pk.metabolite
        cl, v = params["cl"], params[self.pk.volume]
        k_m = params[f"cl_{m.key}"] / params[f"v_{m.key}"]
        formation = polyexp.scale(amount, params["fm"] * cl / v * m.ratio)
        return polyexp.convolve(formation, jnp.reshape(k_m, (1,)), jnp.ones(1))

    def _concentration_responses(self, params, subject=None):
        """Each concentration endpoint's response per mg dosed, in its unit, and the dose
        terms. With a metabolite, the parent's response carries a zero on the metabolite's
        mode, so both share one set of poles."""
        from pkpd.pk import analytic, polyexp

        amount, doses = self._closed_form_amount(params, subject)
        parent = polyexp.scale(amount, _scale(self.pk.unit, "PK") / params[self.pk.volume])
        m = self.pk.metabolite
        if m is None:
            return {self.pk.endpoint: parent}, doses
        met = polyexp.scale(
            self._metabolite_amount(amount, params),
            _scale(m.unit or self.pk.unit, "PK") / params[f"v_{m.key}"],
        )
        padded = analytic.StateResponse(
            met.poles, jnp.concatenate([parent.coef, jnp.zeros_like(met.coef[:, -1:])], axis=-1)
        )
        return {self.pk.endpoint: padded, m.name: met}, doses

    def _sources(self, concs, params) -> dict:
        """The concentration responses and each :class:`ActiveMoiety` driver in use, a weighted
        sum of them on their one pole set."""
        from pkpd.pk import analytic

        out = dict(concs)
        factors = self._driver_factors()
        for m in self._needed_drivers():
            w = m.weights(params, factors[m.name])
            coef = sum(w[e] * concs[e].coef for e in w)
            out[m.name] = analytic.StateResponse(next(iter(concs.values())).poles, coef)
        return out

    def _predict_analytic(self, params, subject):
        out = self._engine.predict(self._pk_params(params), subject)
        conc = out["conc"] * (_scale(self.pk.unit, "PK") / 1000.0)  # the engine gives ng/mL
        values = {self.pk.endpoint: conc}
        pd_names = set(self.structural_parameters) - set(self.pk.parameters())
        occ = getattr(subject, "point_occ", None)
        pd_params = {
            # a PD parameter per occasion: each point takes its occasion's value
            k: (
                v[jnp.asarray(occ)] if k in pd_names and occ is not None and jnp.ndim(v) == 1 else v
            )
            for k, v in params.items()
        }
        for b in self._needed_blocks():
            values[b.name] = b.effect(conc, pd_params)
        return {**{e: values[e] for e in self.endpoints}, "ok": jnp.asarray(True)}

    def _predict_grid(self, params, subject):
        """Closed-form PK (a metabolite's compartment one more exponential mode); an effect
        site in closed form too; turnover states by the exponential integrator of
        :mod:`pkpd.pd.forced` on its dose-aware grid (every dose and infusion end a node).
        With turnover states, data with steady-state doses or resets give ``ok = False`` (the
        turnover would need its own steady state)."""
        from pkpd.pd import forced
        from pkpd.pk import analytic, polyexp

        lin = self._engine
        concs, doses = self._concentration_responses(params, subject)
        t = jnp.asarray(subject.point_time, dtype=float)
        seq = jnp.asarray(subject.point_seq)
        seg = jnp.asarray(subject.point_segment)
        plain = (analytic.BOLUS, analytic.INFUSION)

        def at_points(resp):
            return analytic.superpose(
                resp, doses, t, seq, seg, lin.dose_kinds, getattr(subject, "pairs", None)
            )

        blocks = self._needed_blocks()
        sources = self._sources(concs, params)
        drivers = {}
        for b in blocks:
            drivers[b.name] = sources[b.driver]
            if b.effect_compartment:
                ke0 = params[f"{b.key}_ke0"]
                drivers[b.name] = polyexp.convolve(
                    sources[b.driver], jnp.reshape(ke0, (1,)), jnp.reshape(ke0, (1,))
                )
        if len(concs) == 1:
            values = {self.pk.endpoint: at_points(concs[self.pk.endpoint])}
        else:  # parent and metabolite on one set of poles: one pass over the doses
            poles = concs[self.pk.metabolite.name].poles
            both = analytic.superpose_many(
                poles, jnp.stack([r.coef for r in concs.values()]), doses, t, seq, seg,
                lin.dose_kinds, getattr(subject, "pairs", None),
            )  # fmt: skip
            values = dict(zip(concs, both, strict=True))
        for b in blocks:
            if isinstance(b, Direct):
                values[b.name] = b.effect(at_points(drivers[b.name]), params)
        turnover = [b for b in blocks if isinstance(b, _Turnover)]
        ok = jnp.asarray(True)
        if turnover:
            nodes, index, start_index = self._turnover_grid(params, doses, subject, t)
            h = jnp.diff(nodes)
            grid_t = jnp.concatenate([nodes, nodes[:-1] + 0.5 * h])
            big = jnp.full(grid_t.shape, jnp.iinfo(jnp.int32).max, jnp.int32)
            zero = jnp.zeros(grid_t.shape, jnp.int32)

            # blocks with the same driver (no effect site of their own) share it
            def key(b):
                return b.name if b.effect_compartment else b.driver

            on_grid = {}
            for b in turnover:
                if key(b) in on_grid:
                    continue
                if lin.dose_kinds is not None:
                    # boluses and infusions only, no resets (a fit's data): the exact
                    # recurrence over the grid's steps, O(nodes) instead of O(nodes × doses)
                    at_nodes, at_mid = forced.linear_state_on_grid(
                        drivers[b.name], doses, nodes, start_index
                    )
                    on_grid[key(b)] = jnp.concatenate([at_nodes, at_mid])
                else:
                    on_grid[key(b)] = analytic.superpose(
                        drivers[b.name], doses, grid_t, big, zero, plain
                    )
            c_grid = jnp.stack([on_grid[key(b)] for b in turnover], axis=-1)  # [2N − 1, J]
            states, ok = self._solve_turnover(params, turnover, c_grid, nodes, index, doses)
            values.update(states)
        return {**{e: values[e] for e in self.endpoints}, "ok": ok}

    def _turnover_grid(self, params, doses, subject, t):
        """The turnover grid ``(nodes, index, start_index)``: the one computed from the data
        (:meth:`precompute`) unless a dose modifier moves the doses."""
        grid = getattr(subject, "grid", None)
        if grid is not None and not any(k in params for k in self._modifier_names()):
            return grid
        return _dose_grid(doses, t, subject)

    def _solve_turnover(self, params, turnover, c_grid, nodes, index, doses):
        """The turnover blocks' values at the points (``{name: [P]}``) and ``ok``, by
        :func:`pkpd.pd.forced.solve_forced` from their drivers on the grid, ``c_grid``
        ``[2N − 1, J]`` (at the ``N`` nodes, then at the step midpoints). Data with
        steady-state doses or resets give ``ok = False`` (the turnover would need its own
        steady state)."""
        from pkpd.pd import forced
        from pkpd.pk import analytic

        n = nodes.shape[0]

        def coef(c):
            ab = [b.forced(c[..., j], params) for j, b in enumerate(turnover)]
            return jnp.stack([a for a, _ in ab], -1), jnp.stack([bb for _, bb in ab], -1)

        y0 = jnp.stack([jnp.asarray(params[f"{b.key}_base"], dtype=float) for b in turnover])
        ys, ok = forced.solve_forced(coef, None, y0, nodes, index, conc=(c_grid[:n], c_grid[n:]))
        plain = jnp.asarray((analytic.BOLUS, analytic.INFUSION))
        steady = doses.active & ~jnp.isin(doses.kind, plain)
        ok = ok & ~jnp.any(steady) & ~jnp.any(doses.active & (doses.segment != 0))
        return {b.name: ys[:, j] for j, b in enumerate(turnover)}, ok

    # -- parameters per occasion on the closed forms --------------------------------------------
    def _chain(self, at):
        """The closed-form model as one linear chain for parameters per occasion.

        States: the PK's in :func:`pkpd.pk.analytic.state_matrix` order (mg), the metabolite
        (mg of metabolite), then one effect site per block that has one (in its driver's unit).
        ``at(k)`` gives the parameters of occasion ``k``. Returns ``(system, outputs,
        support)``: ``system(k)`` for :func:`pkpd.pk.analytic.occasion_superpose` (every state's
        response to a unit dose into each dose compartment, and the propagator, on one set of
        poles: the disposition's, ``ka``, the metabolite's and each ``ke0``, a pole that meets
        another split from it as :func:`pkpd.pk.polyexp.convolve` splits them); ``outputs(p)``
        each concentration endpoint, :class:`ActiveMoiety` driver and effect site
        (``<block>:ce``) as a vector over the states for parameters ``p``; ``support`` the
        states each of them reads.
        """
        import numpy as np

        from pkpd.pk import analytic

        pk, lin, m = self.pk, self._engine, self.pk.metabolite
        oral = pk.absorption == "first_order"
        n_pk = len(pk.states) - (m is not None)
        central = 1 if oral else 0
        i_met = n_pk
        sites = [b for b in self._needed_blocks() if b.effect_compartment]
        first_site = n_pk + (m is not None)
        n = first_site + len(sites)
        drivers = self._needed_drivers()
        factors = self._driver_factors()
        support = {pk.endpoint: {central}}
        if m is not None:
            support[m.name] = {i_met}
        for d in drivers:
            support[d.name] = set().union(*(support[e] for e, _ in d.terms))
        for j, b in enumerate(sites):
            support[f"{b.name}:ce"] = {first_site + j}

        # reach[mode, state]: the PK modes reach every state, the metabolite's its own and the
        # effect sites', an effect site's its own
        reach = np.zeros((n, n))
        reach[:n_pk] = 1.0
        reach[np.arange(n), np.arange(n)] = 1.0
        if m is not None:
            reach[i_met, first_site:] = 1.0
        reach = jnp.asarray(reach)

        def outputs(p):
            e = jnp.eye(n)
            vec = {pk.endpoint: e[central] * (_scale(pk.unit, "PK") / p[pk.volume])}
            if m is not None:
                vec[m.name] = e[i_met] * (_scale(m.unit or pk.unit, "PK") / p[f"v_{m.key}"])
            for d in drivers:
                w = d.weights(p, factors[d.name])
                vec[d.name] = sum(w[x] * vec[x] for x in w)
            for j, b in enumerate(sites):
                vec[f"{b.name}:ce"] = e[first_site + j]
            return vec

        def system(k):
            p = at(k)
            sp = lin._structural(self._pk_params(p))
            disp, ka = lin._disposition(sp), sp.get("ka")
            mat = jnp.pad(analytic.state_matrix(disp, ka), ((0, n - n_pk), (0, n - n_pk)))
            poles = (
                disp.poles if ka is None else analytic._confluent_safe_depot_poles(ka, disp.poles)
            )
            vec = outputs(p)
            if m is not None:
                k_m = p[f"cl_{m.key}"] / p[f"v_{m.key}"]
                formation = p["fm"] * p["cl"] / p[pk.volume] * m.ratio
                mat = mat.at[i_met, central].set(formation).at[i_met, i_met].set(-k_m)
                poles = jnp.append(poles, k_m)
            for j, b in enumerate(sites):
                ke0, i = p[f"{b.key}_ke0"], first_site + j
                mat = mat.at[i].set(ke0 * vec[b.driver]).at[i, i].set(-ke0)
                poles = jnp.append(poles, ke0)
            # [n, n, n]: mode, to, from; a mode reaches only its own state and those downstream
            # (exact zeros where rounding would leave ~1e-16 of a slower mode)
            poles = jax.lax.optimization_barrier(_split_poles(poles, n_pk))
            weights = analytic.propagator(mat, poles) * reach[:, :, None]
            dose_states = jnp.asarray((0, 1) if oral else (0,))
            coef = jnp.transpose(weights[:, :, dose_states], (1, 2, 0))  # [n, C, n]
            shared = analytic.StateResponse(
                jnp.broadcast_to(poles, (dose_states.shape[0], n)), coef
            )
            return shared, (poles, weights)

        return system, outputs, support

    def _predict_occasions(self, params, subject):
        """:meth:`predict` with parameters per occasion on the closed forms: the whole chain
        (PK, metabolite, effect sites) carried over occasion boundaries
        (:func:`pkpd.pk.analytic.occasion_superpose`); concentrations and direct effects take
        the parameters of each point's occasion; turnover blocks (their own parameters the
        subject's) are driven by the occasion each grid time falls in, every occasion start a
        node of their grid."""
        from pkpd.pd import forced
        from pkpd.pk import analytic

        lin = self._engine
        n_occ = occasion_count(self.name, params, subject, self._modifier_names())
        declared = self._all_declared()
        per = {
            k: occasion_values(k, v, n_occ)
            for k, v in params.items()
            if k in declared and jnp.ndim(v) >= 1
        }

        def at(k):
            return {**params, **{p: v[k] for p, v in per.items()}}

        system, outputs, support = self._chain(at)
        mods = {k: params[k] for k in self._modifier_names() if k in params}
        doses = lin._doses(mods, subject)
        occasions = (subject.occ_start, subject.occ_seq, subject.occ_segment)
        carry = analytic.occasion_carry(system, doses, subject.dose_occ, occasions, lin.dose_kinds)
        weights = jax.vmap(lambda k: outputs(at(k)))(jnp.arange(n_occ))  # name -> [O, n]
        blocks = self._needed_blocks()

        def driver(b):
            return f"{b.name}:ce" if b.effect_compartment else b.driver

        t = jnp.asarray(subject.point_time, dtype=float)
        occ = jnp.asarray(subject.point_occ)
        direct = [b for b in blocks if isinstance(b, Direct)]
        wanted = list(self.concentration_endpoints) + [driver(b) for b in direct]
        values = {}
        if wanted:
            which = sorted(set().union(*(support[w] for w in wanted)))
            x = analytic.occasion_superpose(
                system, doses, subject.dose_occ, occasions, t, jnp.asarray(subject.point_seq),
                jnp.asarray(subject.point_segment), occ, lin.dose_kinds,
                getattr(subject, "pairs", None), which, carry,
            )  # fmt: skip
            cols = jnp.asarray(which)

            def at_points(name):
                return jnp.sum(x * weights[name][occ][:, cols], axis=-1)

            values.update({e: at_points(e) for e in self.concentration_endpoints})
            point_params = {k: (per[k][occ] if k in per else v) for k, v in params.items()}
            for b in direct:
                values[b.name] = b.effect(at_points(driver(b)), point_params)
        turnover = [b for b in blocks if isinstance(b, _Turnover)]
        ok = jnp.asarray(True)
        if turnover:
            nodes, index, start_index = self._turnover_grid(params, doses, subject, t)
            grid_t = jnp.concatenate([nodes, nodes[:-1] + 0.5 * jnp.diff(nodes)])
            o = analytic.occasion_at(subject, grid_t)
            zero = jnp.zeros(grid_t.shape, jnp.int32)
            r, d_occ = carry.responses, jnp.asarray(subject.dose_occ)
            if lin.dose_kinds is None:  # every state on the grid once, for every driver
                big = jnp.full(grid_t.shape, jnp.iinfo(jnp.int32).max, jnp.int32)
                plain = (analytic.BOLUS, analytic.INFUSION)
                xs = analytic.occasion_superpose(
                    system, doses, subject.dose_occ, occasions, grid_t, big, zero, o, plain,
                    None, None, carry,
                )  # fmt: skip
            on_grid = {}
            for key in dict.fromkeys(driver(b) for b in turnover):
                w = weights[key]  # [O, n]
                if lin.dose_kinds is not None:
                    # boluses and infusions only, no resets: per occasion, the exact recurrence
                    # over its own doses, plus the state carried into it

                    def run(k, wk):
                        on = d_occ == k
                        dk = doses._replace(
                            amount=jnp.where(on, doses.amount, 0.0),
                            rate=jnp.where(on, doses.rate, 0.0),
                        )
                        rk = analytic.StateResponse(
                            r.poles[k], jnp.einsum("n,ncm->cm", wk, r.coef[k])
                        )
                        return jnp.concatenate(
                            forced.linear_state_on_grid(rk, dk, nodes, start_index)
                        )

                    own = jax.vmap(run)(jnp.arange(n_occ), w)  # [O, 2N − 1]
                    own = jnp.take_along_axis(own, o[None, :], axis=0)[0]
                    on_grid[key] = own + analytic.occasion_carried_output(
                        carry, occasions, grid_t, zero, o, w
                    )
                else:
                    on_grid[key] = jnp.sum(xs * w[o], axis=-1)
            c_grid = jnp.stack([on_grid[driver(b)] for b in turnover], axis=-1)
            states, ok = self._solve_turnover(params, turnover, c_grid, nodes, index, doses)
            values.update(states)
        return {**{e: values[e] for e in self.endpoints}, "ok": ok}

    def precompute(self, subjects):
        """The turnover grid of padded subjects, ``(nodes, index, start_index)``, computed once
        from the data for a fit (sorting the nodes inside every gradient costs a third of a
        turnover's gradient on the temsirolimus data); ``None`` without turnover states on the
        grid. :meth:`predict` uses it only when no dose modifier (lag, F, modelled rate or
        duration) moves the doses."""
        if self.engine != "grid" or not any(
            isinstance(b, _Turnover) for b in self._needed_blocks()
        ):
            return None
        import numpy as np

        lin = self._engine

        def one(subject):
            return _dose_grid(lin._doses({}, subject), subject.point_time, subject)

        subjects = jax.tree.map(jnp.asarray, subjects)
        return tuple(np.asarray(x) for x in jax.jit(jax.vmap(one))(subjects))

    def _modified_doses(self, params, subject):
        """Lag times and bioavailability applied to the dose records (ODE engine), as NONMEM
        does: a dose into compartment ``c`` acts ``lag_c`` later, with ``f_c`` times its amount
        (an infusion by ``RATE`` then lasts ``f_c`` times as long; one by ``DUR`` keeps its
        duration)."""
        lag = {c: params[f"lag_{c}"] for c in self.dose_compartment_names if f"lag_{c}" in params}
        bio = {c: params[f"f_{c}"] for c in self.dose_compartment_names if f"f_{c}" in params}
        if not lag and not bio:
            return subject
        numbers = {v: k for k, v in self.compartments.items()}
        cmt = jnp.asarray(subject.dose_cmt)
        cmt = jnp.where(cmt == 0, self.default_dose_compartment, cmt)
        time = jnp.asarray(subject.dose_time)
        amt = jnp.asarray(subject.dose_amt)
        for c, v in lag.items():
            time = time + jnp.where(cmt == numbers[c], v, 0.0)
        for c, v in bio.items():
            amt = amt * jnp.where(cmt == numbers[c], v, 1.0)
        return dataclasses.replace(subject, dose_time=time, dose_amt=amt)


jax.tree_util.register_static(BlockModel)


def _transit_delivery(ev, state):
    """``delivered(t, p)`` for ``transit="estimated"`` (module docstring): the rate (mg/h) at
    which the doses put into the chain (``state``'s column of :func:`pkpd.pk.nonlinear.
    dose_inputs` ``ev``; lag time and bioavailability already applied) reach the depot, with a
    gamma density of delays (shape ``ntr + 1``, mean ``mtt``) for a bolus and its integral over
    the infusion for an infusion."""
    from jax.scipy.special import gammainc, gammaln

    time, bolus = ev["time"], ev["bolus"][:, state]
    start, end, rate = ev["inf_start"], ev["inf_end"], ev["inf_rate"][:, state]

    def cdf(a, x):  # P(a, x), 0 for x <= 0 (its gradient too)
        pos = x > 0
        return jnp.where(pos, gammainc(a, jnp.where(pos, x, 1.0)), 0.0)

    def delivered(t, p):
        a = p["ntr"] + 1.0
        ktr = a / p["mtt"]
        tau = t - time
        pos = tau > 0
        x = ktr * jnp.where(pos, tau, 1.0)
        dens = jnp.where(pos, ktr * jnp.exp(p["ntr"] * jnp.log(x) - x - gammaln(a)), 0.0)
        infusing = cdf(a, ktr * (t - start)) - cdf(a, ktr * (t - end))
        return jnp.sum(bolus * dens) + jnp.sum(rate * infusing)

    return delivered


def _dose_grid(doses, t, subject=None):
    """The turnover grid of :mod:`pkpd.pd.forced` (every dose start and infusion end a node)
    for the dose terms of one subject and its points ``t``; with the subject's occasions, each
    later occasion's start is a node too (parameters may change there)."""
    from pkpd.pd import forced
    from pkpd.pk import analytic

    start = doses.time + doses.lag
    end = start + jnp.where(doses.kind == analytic.INFUSION, doses.duration, 0.0)
    active = doses.active
    if getattr(subject, "occ_start", None) is not None:  # as inputs of no length
        b = jnp.asarray(subject.occ_start, dtype=float)[1:]
        start, end = jnp.concatenate([start, b]), jnp.concatenate([end, b])
        active = jnp.concatenate([active, jnp.asarray(subject.occ_valid)[1:]])
    nodes, index, start_index = forced.dose_grid(start, end, active, t)
    return nodes, index, start_index[: doses.time.shape[0]]


def _split_poles(poles, fixed: int):
    """``poles[fixed:]`` (a metabolite's, effect sites') each moved up by ``2(j + 1)`` times
    :data:`pkpd.pk.polyexp.CONFLUENT_RTOL` (relative; ``j`` its place among them) where it
    meets an earlier pole, so Sylvester's weights see distinct poles (two that met the same
    pole move apart by different amounts). One vectorised step: on a fit's small arrays a loop
    of tiny operations cost a third of the PK gradient."""
    import numpy as np

    from pkpd.pk.polyexp import CONFLUENT_RTOL

    n = poles.shape[0]
    extra = poles[fixed:]
    h = CONFLUENT_RTOL * jnp.abs(extra)
    earlier = np.arange(n)[None, :] < (fixed + np.arange(n - fixed))[:, None]
    close = jnp.any((jnp.abs(extra[:, None] - poles[None, :]) < h[:, None]) & earlier, axis=1)
    shift = 2.0 * (1.0 + np.arange(n - fixed)) * h
    return jnp.concatenate([poles[:fixed], extra + jnp.where(close, shift, 0.0)])


_SUPPORT = {_POS: "> 0", _FRAC: "in (0, 1)", _PCT: "in (0, 100)"}


def _in_support(kind: str, v) -> bool:
    try:
        v = float(v)
    except (TypeError, ValueError):
        return False
    if kind == _POS:
        return v > 0
    if kind == _FRAC:
        return 0 < v < 1
    return 0 < v < 100


def _default_prior(name, unit, kind, typical, omega) -> dict:
    entry: dict[str, Any] = {"unit": unit}
    if kind == _POS:
        entry["prior"] = {"family": "lognormal", "median": float(typical), "sd_log": 1.0}
    else:
        entry["transform"] = "logit"
        entry["prior"] = {"family": "logitnormal", "median": float(typical), "sd_logit": 1.0}
    if omega:
        entry["bsv"] = {"family": "halfnormal", "scale": float(omega)}
    entry["source"] = (
        f"default of the model's blocks: centred on the typical value given to build() "
        f"({typical:g} {unit}), weakly informative; replace with a cited prior"
    )
    entry["assumption"] = True
    return entry


def _default_residual(error, unit, additive) -> dict:
    entry: dict[str, Any] = {"model": error, "unit": unit}
    if error in ("proportional", "combined"):
        entry["proportional"] = {"family": "halfnormal", "scale": 0.3}
    if error in ("additive", "combined"):
        entry["additive"] = {"family": "halfnormal", "scale": float(additive)}
    if error == "lognormal":
        entry["sd_log"] = {"family": "halfnormal", "scale": 0.3}
    if error == "logit":
        entry["sd_logit"] = {"family": "halfnormal", "scale": 0.3}
    entry["source"] = (
        "default of the model's blocks (weakly informative); replace with your assay's"
    )
    entry["assumption"] = True
    return entry


def from_definition(definition: Mapping[str, Any]) -> BlockModel:
    """The model of :attr:`BlockModel.definition` (as stored in a fit file)."""
    d = dict(definition)
    pk = dict(d["pk"])
    if pk.get("metabolite") is not None:
        met = dict(pk["metabolite"])
        if met.get("molar_masses") is not None:
            met["molar_masses"] = tuple(met["molar_masses"])
        pk["metabolite"] = Metabolite(**met)
    kinds = {t.__name__: t for t in _PD_TYPES}
    pd = []
    for b in d.get("pd", []):
        b = dict(b)
        kind = b.pop("block")
        if kind not in kinds:
            raise BlockError(f"unknown PD block {kind!r} in a model definition")
        pd.append(kinds[kind](**b))
    drivers = [ActiveMoiety(**dict(m)) for m in d.get("drivers", [])]
    return build(
        d["name"],
        PK(**pk),
        *drivers,
        *pd,
        typical=d.get("typical"),
        variability=d.get("variability", 0.5),
        solver=d.get("solver", "auto"),
    )


def build(
    name: str,
    pk: PK,
    *pd,
    typical: Mapping[str, float] | None = None,
    variability: float | Mapping[str, float] = 0.5,
    solver: str = "auto",
) -> BlockModel:
    """A model from a :class:`PK` block and any PD blocks (module docstring), and the
    :class:`ActiveMoiety` drivers they use.

    ``typical``: a typical value of every parameter (in its unit; :attr:`BlockModel.parameters`
    lists them): the model then declares default priors (log-normal, or logit-normal for
    fractions and percentages, centred there with SD 1 on that scale; a between-subject SD
    prior half-normal with scale ``variability``, or with ``variability={"cl": 0.5, ...}`` only
    on the parameters named there; weakly informative residual errors), which a
    fit without a priors file uses and ``pkpd priors --model`` writes out to edit.

    ``solver``: ``"auto"`` (the engine the structure allows, module docstring) or ``"ode"``
    (always diffrax at rtol 1e-8: a reference for the faster engines, or for steady-state-free
    data where the grid's ~1e-5 relative error matters).

    Raises :class:`BlockError` (a ``ValueError``) naming the block, the option and what to
    write instead.
    """
    typ = (
        None
        if typical is None
        else tuple(sorted((str(k), float(v)) for k, v in dict(typical).items()))
    )
    if isinstance(variability, Mapping):
        spread = tuple(sorted((str(k), float(v)) for k, v in variability.items()))
    else:
        spread = float(variability)
    drivers = tuple(b for b in pd if isinstance(b, ActiveMoiety))
    pd = tuple(b for b in pd if not isinstance(b, ActiveMoiety))
    return BlockModel(
        name=name,
        pk=pk,
        pd=pd,
        typical=typ,
        variability=spread,
        solver=solver,
        drivers=drivers,
    )
