r"""The flagship joint model: temsirolimus → sirolimus PK linked to S6K, VEGF and PD-1+ CD8+.

PK (whole blood; amounts mg, volumes L, clearances L/h, time h)::

    temsirolimus, 2 compartments (dose into the central compartment, CMT 1):
        dA1/dt = input(t) − (cl/v1)·A1 − (q/v1)·A1 + (q/v2)·A2
        dA2/dt = (q/v1)·A1 − (q/v2)·A2
    sirolimus, 1 compartment, formed from a fraction fm of temsirolimus clearance (molar):
        dAs/dt = fm·(cl/v1)·A1·(MW_sir/MW_tem) − (cl_sir/v_sir)·As
    C_tem = 1000·A1/v1,  C_sir = 1000·As/v_sir                              (ng/mL)

Molecular weights: temsirolimus 1030.3 g/mol, sirolimus 914.2 g/mol (literature file header).
The whole chain is linear, so every unit-dose response is a sum of exponentials
(:mod:`pkpd.pk.polyexp`) and the analytic event engine (:mod:`pkpd.pk.analytic`) gives exact
concentrations for any dose history (infusions by DUR or RATE, ADDL, SS).

PD driver (nM of active moiety)::

    C_drv = C_tem/MW_tem·1000 + potency·C_sir/MW_sir·1000

S6K phosphorylation (% of the subject's baseline), inhibited through an effect compartment
(closed form: one more exponential in the chain)::

    dCe/dt = s6k_ke0·(C_drv − Ce)
    S6K = 100·(1 − s6k_imax·Ce^h/(s6k_ic50^h + Ce^h)),  h = s6k_hill

VEGF (pg/mL), indirect response with inhibition of production (Dayneka type I)::

    dR/dt = kin·(1 − I_v(C_drv)) − kout·R,  kout = 1/vegf_mrt,  kin = vegf_base·kout,  R(0) = vegf_base
    I_v = vegf_imax·C_drv/(vegf_ic50 + C_drv)

PD-1+ % of CD8+ (bounded turnover: P stays in (0, 100) by construction because production
vanishes at 100 % and loss at 0 %)::

    dP/dt = kin_p·(1 − I_p(C_drv))·(100 − P) − pd1_kout·P,
    kin_p = pd1_kout·pd1_base/(100 − pd1_base),  P(0) = pd1_base
    I_p = pd1_imax·C_drv/(pd1_ic50 + C_drv)

VEGF and PD-1 are integrated together by diffrax (:func:`pkpd.ode.solve`) with the driver
evaluated analytically inside the vector field and every dose and infusion end as a jump time.
Each endpoint can be switched off (``endpoints=``) so a fit only pays for what its data hold;
the ODE is skipped when neither VEGF nor PD-1 is asked for.

The registered model ``"temsirolimus"`` is :func:`from_blocks`: these equations written with
the public blocks of :mod:`pkpd.models.blocks`, as a user writes their own model (closed forms
for the PK chain and the effect site, VEGF and PD-1 on the dose-aware grid of
:mod:`pkpd.pd.forced`, parameters per occasion carried over in closed form).
:class:`TemsirolimusModel` writes them by hand; it is kept as the independent reference the
tests and benchmarks compare the registered model with (same predictions, simulations, metrics
and cost per gradient).

Default typical values (:data:`TYPICAL`) come from the published literature (the Torisel label,
phase I/II studies, PD reports); each value's source is cited beside it in the priors file
``priors/temsirolimus.toml``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from pkpd.models.base import (
    METRIC_WINDOWS,
    MetricSpec,
    ModalForm,
    Model,
    Turnover,
    infusions_across_occasions,
    known_endpoints,
    occasion_values,
)
from pkpd.pd.direct import remaining_fraction
from pkpd.pd.forced import linear_state_on_grid
from pkpd.pd.turnover import bounded_turnover_rates, indirect_response_rates
from pkpd.pk import analytic, polyexp
from pkpd.pk.binding import unbound_from_blood

MW_TEM = 1030.3  # g/mol, temsirolimus (literature file header; rxreasoner substance page)
MW_SIR = 914.2  # g/mol, sirolimus (literature file header; Drugs.com USP-DI "Rapamycin")
CONC_SCALE = 1000.0  # mg/L -> ng/mL

ENDPOINTS = {
    "temsirolimus": "ng/mL",
    "sirolimus": "ng/mL",
    "s6k": "% of baseline",
    "vegf": "pg/mL",
    "pd1_cd8": "%",
}
#: DVID code of each endpoint (``pkpd.read_dataset(..., model="temsirolimus")``; also pkpd's
#: default codes when no model is given, :data:`pkpd.data.DEFAULT_ENDPOINTS`).
ENDPOINT_CODES = {1: "temsirolimus", 2: "sirolimus", 3: "s6k", 4: "vegf", 5: "pd1_cd8"}
#: Molar mass (g/mol) of the drug each PK endpoint measures, to read molar units (nmol/L).
ENDPOINT_MOLAR_MASSES = {"temsirolimus": MW_TEM, "sirolimus": MW_SIR}

PARAMETERS = {
    "cl": "L/h",
    "v1": "L",
    "q": "L/h",
    "v2": "L",
    "fm": "1",
    "cl_sir": "L/h",
    "v_sir": "L",
    "potency": "1",
    "s6k_imax": "1",
    "s6k_ic50": "nM",
    "s6k_hill": "1",
    "s6k_ke0": "1/h",
    "vegf_base": "pg/mL",
    "vegf_mrt": "h",
    "vegf_imax": "1",
    "vegf_ic50": "nM",
    "pd1_base": "%",
    "pd1_kout": "1/h",
    "pd1_imax": "1",
    "pd1_ic50": "nM",
}

#: Which parameters each endpoint needs (PK parameters are always needed).
_PK = ("cl", "v1", "q", "v2", "fm", "cl_sir", "v_sir")
_NEEDS = {
    "temsirolimus": ("cl", "v1", "q", "v2"),
    "sirolimus": _PK,
    "s6k": _PK + ("potency", "s6k_imax", "s6k_ic50", "s6k_hill", "s6k_ke0"),
    "vegf": _PK + ("potency", "vegf_base", "vegf_mrt", "vegf_imax", "vegf_ic50"),
    "pd1_cd8": _PK + ("potency", "pd1_base", "pd1_kout", "pd1_imax", "pd1_ic50"),
}

#: Typical values of a 1.85 m² adult with no CYP3A4 co-medication (sources: literature file
#: sections in brackets; [D] derived, [P] assumption; see priors/temsirolimus.toml): the
#: literature's point values, and the truth of the bundled synthetic data. The priors' centres
#: (``pkpd.load_priors(model="temsirolimus").typical()``, prior medians) are these values
#: rounded (cl 16 vs 16.2 L/h, q 9 vs 8.7 L/h, v2 135 vs 137 L, v_sir 140 vs 141.8 L: within
#: 5%), except where :data:`PRIOR_CENTRE_DIFFERENCES` says why they differ on purpose.
TYPICAL = {
    "cl": 16.2,  # L/h, Torisel label [§1]
    "v1": 35.0,  # L, 2-cmt solve reproducing label Cmax 585 ng/mL [§6, D]
    "q": 8.7,  # L/h [§6, D]
    "v2": 137.0,  # L, Vss 172 L − V1 [§6, D]
    "fm": 0.36,  # fraction of temsirolimus CL forming sirolimus, mass balance [§6, D]
    "cl_sir": 1.8,  # L/h, oral CL/F × F 0.14 [§5, §6, D]
    "v_sir": 141.8,  # L, cl_sir × t½ 54.6 h / ln 2 [§1, §6, D]
    "potency": 1.0,  # sirolimus : temsirolimus, both FKBP12–mTOR [§7, P]
    "s6k_imax": 0.9,  # between 56% (Fukudo) and >95% (Boulay 2004) [§4a, P]
    "s6k_ic50": 1.46,  # nM; 1.5 ng/mL / 1030.3 g/mol [§7, D]
    "s6k_hill": 1.0,  # [§7, P]
    "s6k_ke0": 0.03,  # 1/h, slow offset: inhibition ≥ 7 d (O'Donnell 2008) [§4a, §7, P]
    "vegf_base": 60.0,  # pg/mL, Hansson 2013 59.7 [§4b]
    "vegf_mrt": 91.0,  # h, Hansson 2013 [§4b]
    "vegf_imax": 0.29,  # Beta(2, 5) prior mean [§7, P]
    "vegf_ic50": 1.46,  # nM, as S6K [§7, P]
    "pd1_base": 16.8,  # %, the mission brief (Kobayashi 2020, unverified) [§4c]
    "pd1_kout": 0.005,  # 1/h, t½ ≈ 6 d [§7, P]
    "pd1_imax": 0.3,  # 16.8% → 12.7% is a 24% relative fall [§4c, §7, P]
    "pd1_ic50": 1.46,  # nM [P]
}


#: Parameters whose value in :data:`TYPICAL` differs by more than 5% from the prior's median, and
#: why. The Imax priors are Beta distributions set from the literature's range, not centred on
#: one value; the synthetic truth takes a point inside each prior's central 90% so that a fit
#: must move the posterior away from the prior's centre (tests/inference/test_priors.py checks both).
PRIOR_CENTRE_DIFFERENCES = {
    "s6k_imax": "0.9 (>95% inhibition reported by Boulay 2004, 56% by Fukudo) vs the Beta(4, 1.5) "
    "prior's median 0.756, which spans both reports",
    "vegf_imax": "0.29, the Beta(2, 5) prior's mean, vs its median 0.264",
}

#: Covariate effects of the typical subject's parameters: (parameter, covariate, form,
#: reference, value), the medians of priors/temsirolimus.toml [covariates.*] (sources there:
#: Boni 2005 for BSA; Wu 2012 for hematocrit; Boni 2008 ketoconazole and Boni 2007 rifampin for
#: CYP3A4). ``power``: x (cov/ref)^value; ``categorical``: x value where the 0/1 flag is 1.
COVARIATE_EFFECTS = {
    "cl_bsa": ("cl", "BSA", "power", 1.85, 0.75),
    "v1_bsa": ("v1", "BSA", "power", 1.85, 0.75),
    "cl_sir_hct": ("cl_sir", "HCT", "power", 35.1, -0.5),
    "cl_sir_cyp3a4_inhibitor": ("cl_sir", "CYP3A4_INH", "categorical", None, 0.32),
    "cl_sir_cyp3a4_inducer": ("cl_sir", "CYP3A4_IND", "categorical", None, 2.3),
    "v1_cyp3a4_inducer": ("v1", "CYP3A4_IND", "categorical", None, 2.0),
}


def covariate_log_multiplier(parameter: str, covariates: Mapping[str, float], effects=None):
    """Sum of log multipliers of the covariate effects on ``parameter`` (0 when none apply).

    ``covariates`` maps column names (``BSA`` m², ``HCT`` %, ``CYP3A4_INH``/``CYP3A4_IND`` 0/1)
    to values; absent covariates have no effect.
    """
    effects = COVARIATE_EFFECTS if effects is None else effects
    total = 0.0
    for par, cov, form, ref, value in effects.values():
        if par != parameter or cov not in covariates:
            continue
        x = covariates[cov]
        if form == "power":
            total = total + value * jnp.log(x / ref)
        elif form == "categorical":
            total = total + jnp.where(x == 1, jnp.log(value), 0.0)
        else:
            raise ValueError(f"covariate form {form!r}: expected 'power' or 'categorical'")
    return total


def apply_covariates(params: Mapping[str, float], covariates: Mapping[str, float], effects=None):
    """Typical parameters of a subject with these covariates (covariate hooks of the model).

    >>> p = apply_covariates(TYPICAL, {"BSA": 1.85, "CYP3A4_INH": 1})
    >>> round(float(p["cl_sir"]), 3)   # ketoconazole-like inhibition: 1.8 L/h x 0.32
    0.576
    """
    return {
        k: v * jnp.exp(covariate_log_multiplier(k, covariates, effects)) for k, v in params.items()
    }


#: Saturable blood-cell binding (Langmuir, as for everolimus: ter Heine 2018, literature §2):
#: ``C_wb = (1 + kns)·C_u + bmax·C_u/(kd + C_u)``.
BINDING_PARAMETERS = {"bmax": "ng/mL", "kd": "ng/mL", "kns": "1"}


def binding_vector_field(t, y, p):
    r"""Temsirolimus/sirolimus PK with saturable binding in blood (amounts mg, time h).

    The central amount ``A1`` is whole-blood drug (``C_wb = A1/v1``, mg/L). Distribution and
    elimination act on ``C_eff = r_0·C_u``, with ``C_u`` the unbound concentration
    (:func:`unbound_from_blood`) and ``r_0 = 1 + kns + bmax/kd`` the blood-to-unbound ratio at
    low concentrations, so that ``cl`` keeps its meaning (whole-blood clearance) at low
    concentrations and the model tends to the linear one as ``bmax → 0``. As binding saturates,
    ``C_eff`` exceeds ``C_wb``, and whole-blood exposure rises less than proportionally with
    dose (Torisel label, 1–25 mg; literature §1)::

        dA1/dt = −(cl + q)·C_eff + q·A2/v2          (+ infusions)
        dA2/dt =  q·C_eff − q·A2/v2
        dAs/dt =  fm·cl·C_eff·MW_sir/MW_tem − (cl_sir/v_sir)·As
    """
    bmax, kd = p["bmax"] / CONC_SCALE, p["kd"] / CONC_SCALE  # ng/mL -> mg/L
    c_wb = jnp.maximum(y[0], 0.0) / p["v1"]
    r0 = 1.0 + p["kns"] + bmax / kd
    c_eff = r0 * unbound_from_blood(c_wb, bmax, kd, p["kns"])
    a2 = y[1] / p["v2"]
    return jnp.stack(
        [
            -(p["cl"] + p["q"]) * c_eff + p["q"] * a2,
            p["q"] * c_eff - p["q"] * a2,
            p["fm"] * p["cl"] * c_eff * (MW_SIR / MW_TEM) - p["cl_sir"] / p["v_sir"] * y[2],
        ]
    )


def _scalar(params, name):
    v = jnp.asarray(params[name], dtype=float)
    if v.ndim != 0:
        raise ValueError(
            f"parameter {name!r} must be a scalar for one subject; got shape {v.shape}"
        )
    return v


#: Week 8 (h): the time of the PD-1 change metric in simulations (the PD-1+ CD8+ fall from
#: 16.8% to 12.7% was measured after about two months of treatment; literature §4c).
WEEK8_H = 8 * 168.0


def s6k_from_effect(params, ce):
    """S6K phosphorylation (% of the subject's baseline) from the effect-site driver ``ce``
    (nM): ``100·(1 − s6k_imax·Ce^h/(s6k_ic50^h + Ce^h))`` (:func:`pkpd.pd.direct.remaining_fraction`),
    ``Ce`` floored at 0."""
    return 100.0 * remaining_fraction(
        jnp.maximum(ce, 0.0),
        _scalar(params, "s6k_imax"),
        _scalar(params, "s6k_ic50"),
        _scalar(params, "s6k_hill"),
    )


def turnover_parameters(params, use_vegf: bool, use_pd1: bool) -> dict:
    """The VEGF and PD-1 turnover constants (a state not used gets inert values)."""
    get = lambda p, default: _scalar(params, p) if p in params else jnp.asarray(default)  # noqa: E731
    one, zero = jnp.asarray(1.0), jnp.asarray(0.0)
    return dict(
        vegf_base=get("vegf_base", 1.0) if use_vegf else one,
        kout_v=1.0 / get("vegf_mrt", 1.0) if use_vegf else one,
        imax_v=get("vegf_imax", 0.0) if use_vegf else zero,
        ic50_v=get("vegf_ic50", 1.0) if use_vegf else one,
        p0=get("pd1_base", 50.0) if use_pd1 else jnp.asarray(50.0),
        kout_p=get("pd1_kout", 1.0) if use_pd1 else one,
        imax_p=get("pd1_imax", 0.0) if use_pd1 else zero,
        ic50_p=get("pd1_ic50", 1.0) if use_pd1 else one,
    )


def vegf_rates(k, c):
    """VEGF ``(production, loss)`` at driver ``c`` (nM): indirect response type I
    (:func:`pkpd.pd.turnover.indirect_response_rates`, baseline ``vegf_base``, ``kout =
    1/vegf_mrt``)."""
    return indirect_response_rates(
        "I", c, k["vegf_base"], k["kout_v"], imax=k["imax_v"], ic50=k["ic50_v"]
    )


def pd1_rates(k, c):
    """PD-1 ``(production, loss)`` at driver ``c`` (nM): bounded turnover of a percentage
    (:func:`pkpd.pd.turnover.bounded_turnover_rates`, baseline ``pd1_base``)."""
    return bounded_turnover_rates(c, k["p0"], k["kout_p"], k["imax_p"], k["ic50_p"])


def driver_weights(params):
    """The PD driver (nM) per mg in each state of the occasion chain ``[A1, A2, As]``:
    ``1e6·A1/(v1·MW_tem) + potency·1e6·As/(v_sir·MW_sir)`` (module docstring), as ``[3]``."""
    return jnp.stack(
        [
            1e6 / (params["v1"] * MW_TEM),
            jnp.zeros_like(params["v1"]),
            params["potency"] * 1e6 / (params["v_sir"] * MW_SIR),
        ]
    )


#: Parameters that may change from one occasion to the next (inter-occasion variability): those
#: of the linear chain (PK, potency, effect site) and of the S6K response. The VEGF and PD-1
#: turnover constants stay the subject's (a baseline or turnover rate moving between cycles is
#: not what the data of such trials inform).
OCCASION_PARAMETERS = _PK + ("potency", "s6k_ke0", "s6k_imax", "s6k_ic50", "s6k_hill")

#: The turnover constants in the order of the validity check, and the inert value each takes
#: where the parameters are not valid.
_TURNOVER_ORDER = ("vegf_base", "kout_v", "imax_v", "ic50_v", "p0", "kout_p", "imax_p", "ic50_p")
_TURNOVER_INERT = dict(
    vegf_base=1.0, kout_v=1.0, imax_v=0.0, ic50_v=1.0, p0=50.0, kout_p=1.0, imax_p=0.0, ic50_p=1.0
)


@dataclass(frozen=True)
class TemsirolimusModel(Model):
    """Joint temsirolimus/sirolimus PK and S6K/VEGF/PD-1 PD model (equations: module docstring).

    Parameters
    ----------
    endpoints : sequence of str
        Endpoints to predict (any of :data:`ENDPOINTS`); the others are not computed and their
        parameters are not needed.
    rtol, atol : float
        Tolerances of the VEGF/PD-1 ODE solve (states in pg/mL and %). The defaults (1e-6)
        are far below any assay error and keep fits fast; tighten them to check accuracy.
    max_steps : int
        Step budget of the ODE solve; exhausting it gives ``ok=False``.
    binding : bool
        Saturable blood-cell binding of temsirolimus (:func:`binding_vector_field`, parameters
        ``bmax``, ``kd``, ``kns``); PK endpoints only, solved by diffrax (Kvaerno5).
    pd_solver : {"grid", "diffrax"}
        How VEGF and PD-1 are integrated. ``"grid"`` (default): both are linear in their own
        state given the driver, so an exponential integrator on a dose-aware grid reduces to
        affine maps composed by an associative scan (:mod:`pkpd.pd.forced`; within 1e-5
        relative of a tight reference at typical values, 3e-4 at the priors' extremes;
        gradients in milliseconds). ``"diffrax"``: adaptive solve with
        ``solver``, ``rtol``, ``atol`` (slow inside NUTS; for checking).
    solver : {"tsit5", "kvaerno5"}
        Of the ``"diffrax"`` PD solve. The VEGF and PD-1 turnover rates (1/MRT ≈ 0.01/h, kout ≈ 0.005/h) make the system
        non-stiff, so the explicit Tsit5 is the default: it compiles and differentiates far
        faster inside NUTS than the implicit Kvaerno5 (available for stiff parameter values).

    Examples
    --------
    >>> import jax, pkpd
    >>> from pkpd.models.temsirolimus import TemsirolimusModel, TYPICAL
    >>> ev = pkpd.Regimen("25 mg once over 30 min").to_records()
    >>> # add sampling times, then: model.predict(TYPICAL, subject)["temsirolimus"]
    """

    endpoints: tuple[str, ...] = tuple(ENDPOINTS)
    rtol: float = 1e-6
    atol: float = 1e-6
    max_steps: int = 4096
    name: str = "temsirolimus"
    solver: str = "tsit5"
    binding: bool = False
    pd_solver: str = "grid"
    #: Dose kinds the data can hold (static; :func:`pkpd.pk.analytic.kinds_in_data`); a fit
    #: sets it so the engine skips the steady-state formulas. None = all kinds.
    dose_kinds: tuple | None = None

    def __post_init__(self):
        eps = known_endpoints(self.name, self.endpoints, ENDPOINTS)
        object.__setattr__(self, "endpoints", eps)
        if self.pd_solver not in ("grid", "diffrax"):
            raise ValueError(f"pd_solver={self.pd_solver!r}; expected 'grid' or 'diffrax'")
        if self.binding and any(e not in ("temsirolimus", "sirolimus") for e in eps):
            raise ValueError(
                "saturable binding (binding=True) is available for the PK endpoints "
                "temsirolimus and sirolimus only; switch the PD endpoints off"
            )

    #: Endpoints worth predicting only for the subjects that have them: VEGF and PD-1 need an
    #: integration, S6K an effect-compartment response per dose (fits group subjects by them).
    costly_endpoints = ("s6k", "vegf", "pd1_cd8")

    #: IC50s that NUTS samples through their Hill-scaled level (``pkpd.inference.fit``,
    #: ``FitSpec.levels``): ``{ic50: (hill, scale)}``. The S6K response depends on
    #: ``(Ce/IC50)^hill`` with ``Ce`` proportional to ``potency`` where sirolimus dominates the
    #: driver; with its data mostly near Imax the posterior of (hill, IC50, potency) is a
    #: curved ridge (on the bundled data: corr(hill, log IC50) 0.78, and the largest local
    #: curvature of the whole posterior, benchmarks/RESULTS.md 2026-12-02b).
    hill_levels = {"s6k_ic50": ("s6k_hill", "potency")}

    def with_endpoints(self, endpoints: Sequence[str]) -> TemsirolimusModel:
        """The same model predicting only ``endpoints`` (e.g. those present in the data)."""
        return dataclasses.replace(self, endpoints=tuple(endpoints))

    # -- description -----------------------------------------------------------------------------
    @property
    def parameters(self) -> dict[str, str]:
        """Parameters the chosen endpoints need, with units."""
        need = {p for e in self.endpoints for p in _NEEDS[e]}
        if self.binding:
            need |= set(_PK) | set(BINDING_PARAMETERS)
        return {p: u for p, u in {**PARAMETERS, **BINDING_PARAMETERS}.items() if p in need}

    @property
    def structural_parameters(self) -> tuple[str, ...]:
        return tuple(self.parameters)

    @property
    def all_parameters(self) -> dict[str, str]:
        """Every parameter of the joint model, whichever endpoints are switched on."""
        return {**PARAMETERS, **BINDING_PARAMETERS}

    @property
    def compartments(self) -> dict[int, str]:
        return {1: "central", 2: "peripheral", 3: "sirolimus"}

    @property
    def endpoint_units(self) -> dict[str, str]:
        return {e: ENDPOINTS[e] for e in self.endpoints}

    @property
    def endpoint_codes(self) -> dict[int, str]:
        """DVID code of every endpoint (:data:`ENDPOINT_CODES`), whichever are switched on."""
        return dict(ENDPOINT_CODES)

    @property
    def endpoint_molar_masses(self) -> dict[str, float]:
        """Molar masses (g/mol) of the PK endpoints (:data:`ENDPOINT_MOLAR_MASSES`)."""
        return dict(ENDPOINT_MOLAR_MASSES)

    @property
    def concentration_endpoints(self) -> tuple[str, ...]:
        return tuple(e for e in self.endpoints if e in ENDPOINT_MOLAR_MASSES)

    @property
    def concentration_volumes(self) -> dict[str, str]:
        """Temsirolimus is dosed into V1 (sirolimus is formed, its ``dose/C`` is no volume)."""
        return {"temsirolimus": "v1"} if "temsirolimus" in self.endpoints else {}

    def with_dose_kinds(self, kinds: tuple | None) -> TemsirolimusModel:
        return dataclasses.replace(self, dose_kinds=kinds)

    @property
    def occasion_parameters(self) -> tuple[str, ...]:
        """:data:`OCCASION_PARAMETERS` that the chosen endpoints need (none with saturable
        binding); see :meth:`predict` for the semantics."""
        if self.binding:
            return ()
        return tuple(p for p in OCCASION_PARAMETERS if p in self.parameters)

    def _by_occasion(self, params) -> bool:
        return any(jnp.ndim(v) == 1 for v in params.values())

    def occasion_problems(self, subjects, line) -> list[str]:
        """Infusions still running when the next occasion starts
        (:func:`pkpd.models.base.infusions_across_occasions`)."""
        return infusions_across_occasions(self.name, subjects, line)

    def check_parameters(self, params: Mapping[str, object]) -> None:
        """Raise ``ValueError`` naming unknown parameters and those the endpoints need."""
        unknown = sorted(set(params) - set(self.all_parameters))
        missing = [p for p in self.parameters if p not in params]
        if unknown or missing:
            raise ValueError(
                f"model 'temsirolimus' with endpoints {', '.join(self.endpoints)}: "
                + "; ".join(
                    x
                    for x in (
                        f"unknown parameter(s) {', '.join(unknown)}" if unknown else "",
                        f"missing parameter(s) {', '.join(missing)}" if missing else "",
                    )
                    if x
                )
                + ". Its parameters: "
                + ", ".join(f"{k} ({u})" for k, u in self.parameters.items())
            )

    def check_subject(self, subject) -> list[str]:
        cmt = np.asarray(subject.dose_cmt)
        mask = analytic.host_active_doses(subject)
        bad = sorted(set(cmt[mask & ~np.isin(cmt, (0, 1))].tolist()))
        if bad:
            return [f"doses into compartment(s) {bad}; temsirolimus is dosed IV into CMT 1"]
        return []

    # -- responses -------------------------------------------------------------------------------
    def responses(self, params: Mapping[str, object]) -> dict[str, analytic.StateResponse]:
        """Polyexponential unit-dose responses (per mg of temsirolimus into CMT 1).

        Keys: ``temsirolimus`` and ``sirolimus`` (ng/mL), ``driver`` (nM) and ``effect`` (Ce,
        nM), as far as the chosen endpoints need them.
        """
        cl, v1, q, v2 = (_scalar(params, p) for p in ("cl", "v1", "q", "v2"))
        disp = analytic.disposition(cl, v1, [q], [v2])
        a_tem = analytic.state_response(disp, None, state=0)  # mg in A1 per mg dosed
        out = {"temsirolimus": polyexp.scale(a_tem, CONC_SCALE / v1)}
        need_sir = any(e != "temsirolimus" for e in self.endpoints)
        if not need_sir:
            return out
        fm, cl_sir, v_sir = (_scalar(params, p) for p in ("fm", "cl_sir", "v_sir"))
        k_sir = cl_sir / v_sir
        formation = polyexp.scale(a_tem, fm * cl / v1 * (MW_SIR / MW_TEM))  # mg/h of sirolimus
        a_sir = polyexp.convolve(formation, k_sir[None], jnp.ones(1))  # mg in As
        out["sirolimus"] = polyexp.scale(a_sir, CONC_SCALE / v_sir)
        if not any(e in ("s6k", "vegf", "pd1_cd8") for e in self.endpoints):
            return out
        potency = _scalar(params, "potency")
        # ng/mL -> nM: x 1000 / MW. The temsirolimus response carries a zero coefficient on the
        # sirolimus pole and vice versa, so the two share one set of poles.
        tem_nm = polyexp.scale(out["temsirolimus"], 1000.0 / MW_TEM)
        sir_nm = polyexp.scale(out["sirolimus"], potency * 1000.0 / MW_SIR)
        tem_padded = analytic.StateResponse(
            poles=sir_nm.poles,
            coef=jnp.concatenate([tem_nm.coef, jnp.zeros_like(sir_nm.coef[:, -1:])], axis=-1),
        )
        out["driver"] = analytic.StateResponse(sir_nm.poles, tem_padded.coef + sir_nm.coef)
        if "s6k" in self.endpoints:
            ke0 = _scalar(params, "s6k_ke0")
            out["effect"] = polyexp.convolve(out["driver"], ke0[None], ke0[None])
        return out

    def _doses(self, subject):
        return analytic.dose_terms(subject, {}, {1: 0}, default_compartment=0)

    # -- fast form and metrics for simulation ----------------------------------------------------
    def modal_form(self, params: Mapping[str, object]) -> ModalForm:
        """The model as modes (:class:`pkpd.models.base.ModalForm`): the polyexponential
        responses of :meth:`responses` on one set of poles (outputs ``temsirolimus``,
        ``sirolimus``, ``driver``, ``ce``), S6K pointwise from ``ce``
        (:func:`s6k_from_effect`), VEGF and PD-1 as turnover states driven by ``driver``
        (:func:`vegf_rates`, :func:`pd1_rates`)."""
        resp = self.responses(params)
        top = next(k for k in ("effect", "sirolimus", "temsirolimus") if k in resp)
        lam = resp[top].poles[0]
        M = lam.shape[0]
        outputs = {}
        for k, out in (
            ("temsirolimus", "temsirolimus"),
            ("sirolimus", "sirolimus"),
            ("driver", "driver"),
            ("effect", "ce"),
        ):
            if k in resp:
                c = resp[k].coef[0]
                outputs[out] = jnp.concatenate([c, jnp.zeros(M - c.shape[0])])
        direct = {}
        if "s6k" in self.endpoints:
            direct["s6k"] = ("ce", lambda ce: s6k_from_effect(params, ce))
        use_v, use_p = "vegf" in self.endpoints, "pd1_cd8" in self.endpoints
        turnover = {}
        if use_v or use_p:
            k = turnover_parameters(params, use_v, use_p)
            if use_v:
                turnover["vegf"] = Turnover("driver", k["vegf_base"], lambda c: vegf_rates(k, c))
            if use_p:
                turnover["pd1_cd8"] = Turnover("driver", k["p0"], lambda c: pd1_rates(k, c))
        return ModalForm(lam, outputs, direct, turnover)

    def modal_parameters_supported(self, parameters) -> bool:
        """Every variant but saturable binding (nonlinear) has the modal form."""
        return not self.binding

    def combined_concentrations(self, endpoints) -> dict[str, dict]:
        """``total``: temsirolimus + sirolimus as a molar sum (nmol/L), both being active."""
        if "temsirolimus" in endpoints and "sirolimus" in endpoints:
            return {
                "total": dict(
                    units="nmol/L",
                    long_name="temsirolimus + sirolimus, molar sum",
                    terms={"temsirolimus": 1000.0 / MW_TEM, "sirolimus": 1000.0 / MW_SIR},
                )
            }
        return {}

    def response_metrics(self, endpoints, horizon_h: float) -> dict[str, MetricSpec]:
        """S6K inhibition at the cycle-1 and steady-state troughs, the VEGF change (%) at the
        horizon and the PD-1 change (percentage points) at week 8 (:data:`WEEK8_H`, when the
        horizon reaches it)."""
        where = METRIC_WINDOWS
        out = {}
        if "s6k" in endpoints:
            for tag, txt in where.items():
                out[f"s6k_inhibition_trough_{tag}"] = MetricSpec(
                    endpoint="s6k",
                    kind="inhibition_trough",
                    units="%",
                    long_name="S6K inhibition (100 - S6K phosphorylation in % of the "
                    f"subject's baseline) at the trough ending {txt}",
                    window=tag,
                )
        if "vegf" in endpoints:
            out["vegf_change_pct"] = MetricSpec(
                endpoint="vegf",
                kind="change_pct",
                units="%",
                long_name=f"VEGF change from baseline at the horizon ({horizon_h:g} h), "
                "100*(VEGF(t)/VEGF(0) - 1)",
                time_h=horizon_h,
            )
        if "pd1_cd8" in endpoints and WEEK8_H <= horizon_h + 1e-9:
            out["pd1_change_week8"] = MetricSpec(
                endpoint="pd1_cd8",
                kind="change_abs",
                units="percentage points",
                long_name="change of PD-1+ % of CD8+ T cells from "
                f"baseline at week 8 ({WEEK8_H:g} h): PD1(t) - PD1(0), in percentage points",
                time_h=WEEK8_H,
            )
        return out

    # -- prediction ------------------------------------------------------------------------------
    def predict(self, params: Mapping[str, object], subject) -> dict[str, jax.Array]:
        """Every chosen endpoint at each prediction point of one subject.

        Returns
        -------
        dict
            Endpoint name → array ``[P]`` in the units of :data:`ENDPOINTS`, plus ``"ok"`` (a
            boolean scalar: False when the VEGF/PD-1 ODE solve failed).

        Notes
        -----
        **Parameters per occasion** (inter-occasion variability, :attr:`occasion_parameters`
        given as ``[O]`` arrays, one value per occasion of the subject): parameters are
        constant within an occasion and change at its first record, as in NONMEM. Drug given
        in one occasion and still present in the next is carried over as the state of the
        whole linear chain — temsirolimus in the central and peripheral compartments,
        sirolimus, and the S6K effect site — and moves on under the new occasion's parameters
        (:func:`pkpd.pk.analytic.occasion_superpose`); concentrations use the current
        occasion's volumes. VEGF and PD-1 keep their own (continuous) states and are driven by
        the concentration of the occasion each time falls in; every occasion start is a node
        of their grid. Infusions must end before the next occasion starts (a fit checks this).
        """
        if self.binding:
            return self._predict_binding(params, subject)
        if self._by_occasion(params):
            return self._predict_occasions(params, subject)
        resp = self.responses(params)
        doses = self._doses(subject)
        t = jnp.asarray(subject.point_time, dtype=float)
        seq = jnp.asarray(subject.point_seq)
        seg = jnp.asarray(subject.point_segment)
        pairs = getattr(subject, "pairs", None)
        out: dict[str, jax.Array] = {}
        if "sirolimus" in resp:
            # temsirolimus and sirolimus share the poles of the sirolimus response (temsirolimus
            # has a zero coefficient on the sirolimus pole): one pass over doses.
            sir = resp["sirolimus"]
            tem = resp["temsirolimus"]
            tem_c = jnp.concatenate([tem.coef, jnp.zeros_like(sir.coef[:, -1:])], axis=-1)
            vals = analytic.superpose_many(
                sir.poles, jnp.stack([tem_c, sir.coef]), doses, t, seq, seg, self.dose_kinds, pairs
            )
            out["temsirolimus"], out["sirolimus"] = vals[0], vals[1]
            out = {e: v for e, v in out.items() if e in self.endpoints}
        else:
            out["temsirolimus"] = analytic.superpose(
                resp["temsirolimus"], doses, t, seq, seg, self.dose_kinds, pairs
            )
        if "s6k" in self.endpoints:
            ce = analytic.superpose(resp["effect"], doses, t, seq, seg, self.dose_kinds, pairs)
            out["s6k"] = s6k_from_effect(params, ce)
        ok = jnp.array(True)
        if "vegf" in self.endpoints or "pd1_cd8" in self.endpoints:
            ys, ok = self._turnover(params, resp["driver"], doses, subject)
            out.update(self._turnover_outputs(ys))
        out["ok"] = ok
        return out

    def _turnover_outputs(self, ys) -> dict:
        """The chosen endpoints among VEGF and PD-1 from :meth:`_turnover`'s ``[P, 2]``."""
        return {e: ys[:, j] for j, e in enumerate(("vegf", "pd1_cd8")) if e in self.endpoints}

    def _occasion_system(self, params, n_occ):
        """The linear chain per occasion for :func:`pkpd.pk.analytic.occasion_superpose`:
        states ``[A1, A2]`` (mg), then ``As`` (mg) when sirolimus is needed, then ``Ce`` (nM)
        with S6K; the state responses per mg of temsirolimus into CMT 1 are those of
        :meth:`responses`, and the rate matrix is built on their poles (a metabolite or
        effect-site pole split from one it meets stays split, so Sylvester's weights hold)."""
        bad = [
            p for p, v in params.items() if jnp.ndim(v) != 0 and p not in self.occasion_parameters
        ]
        if bad:
            raise ValueError(
                f"model 'temsirolimus': parameter(s) {', '.join(sorted(bad))} given per occasion; "
                f"only {', '.join(self.occasion_parameters) or 'none'} may change between "
                "occasions (with these endpoints and options)"
            )
        per = {
            p: occasion_values(p, v, n_occ)
            for p, v in params.items()
            if p in self.occasion_parameters
        }
        need_sir = any(e != "temsirolimus" for e in self.endpoints)
        need_ce = "s6k" in self.endpoints

        def system(k):
            # every state on one pole set (the sirolimus or effect response's, which extends
            # the disposition poles), so their exponentials are computed once
            pk = {**params, **{p: v[k] for p, v in per.items()}}
            cl, v1, q, v2 = (pk[p] for p in ("cl", "v1", "q", "v2"))
            disp = analytic.disposition(cl, v1, [q], [v2])
            coefs = [analytic.state_response(disp, None, state=i).coef for i in (0, 1)]
            m = analytic.state_matrix(disp)
            poles = disp.poles
            if need_sir:
                resp = self.responses(pk)
                coefs.append(resp["sirolimus"].coef * (pk["v_sir"] / CONC_SCALE))  # mg
                top = resp["effect"] if need_ce else resp["sirolimus"]
                poles = top.poles[0]
                k_sir = poles[2]  # as split by polyexp.convolve
                formation = pk["fm"] * cl / v1 * (MW_SIR / MW_TEM)
                m = jnp.pad(m, ((0, 1), (0, 1)))
                m = m.at[2, 0].set(formation).at[2, 2].set(-k_sir)
                if need_ce:
                    coefs.append(resp["effect"].coef)  # nM
                    ke0 = poles[3]
                    m = jnp.pad(m, ((0, 1), (0, 1)))
                    m = m.at[3, :3].set(pk["s6k_ke0"] * driver_weights(pk))
                    m = m.at[3, 3].set(-ke0)
            M = poles.shape[0]
            coef = jnp.stack([jnp.pad(c, ((0, 0), (0, M - c.shape[-1]))) for c in coefs])
            shared = analytic.StateResponse(poles[None, :], coef)  # coef [n, 1, M]
            return shared, (poles, analytic.propagator(m, poles))

        return system, per

    def _predict_occasions(self, params, subject):
        """:meth:`predict` with parameters per occasion (see its Notes)."""
        if getattr(subject, "occ_start", None) is None:
            raise ValueError(
                "model 'temsirolimus': parameters given per occasion, but the subject's data "
                "have no occasions (an OCC column, or occasions derived from the doses)"
            )
        n_occ = subject.occ_start.shape[0]
        system, per = self._occasion_system(params, n_occ)
        doses = self._doses(subject)
        occasions = (subject.occ_start, subject.occ_seq, subject.occ_segment)
        value = lambda p, occ: per[p][occ] if p in per else params[p]  # noqa: E731

        carry = analytic.occasion_carry(system, doses, subject.dose_occ, occasions, self.dose_kinds)

        def states(t, seq, seg, occ, pairs, which):
            return analytic.occasion_superpose(
                system, doses, subject.dose_occ, occasions, t, seq, seg, occ,
                self.dose_kinds, pairs, which, carry,
            )  # fmt: skip

        t = jnp.asarray(subject.point_time, dtype=float)
        occ = jnp.asarray(subject.point_occ)
        need_sir = any(e != "temsirolimus" for e in self.endpoints)
        which = (0, 2, 3) if "s6k" in self.endpoints else ((0, 2) if need_sir else (0,))
        out: dict[str, jax.Array] = {}
        if {"temsirolimus", "sirolimus", "s6k"} & set(self.endpoints):
            x = states(
                t,
                jnp.asarray(subject.point_seq),
                jnp.asarray(subject.point_segment),
                occ,
                getattr(subject, "pairs", None),
                which,
            )
            if "temsirolimus" in self.endpoints:
                out["temsirolimus"] = CONC_SCALE * x[:, 0] / value("v1", occ)
            if "sirolimus" in self.endpoints:
                out["sirolimus"] = CONC_SCALE * x[:, 1] / value("v_sir", occ)
            if "s6k" in self.endpoints:
                out["s6k"] = 100.0 * remaining_fraction(
                    jnp.maximum(x[:, 2], 0.0),
                    value("s6k_imax", occ),
                    value("s6k_ic50", occ),
                    value("s6k_hill", occ),
                )
        ok = jnp.array(True)
        if "vegf" in self.endpoints or "pd1_cd8" in self.endpoints:
            last_seg = jnp.max(jnp.where(doses.active, doses.segment, 0))
            # nM per mg of each state, per occasion: [O, n] (zero on the effect site)
            w = jax.vmap(lambda k: driver_weights({p: value(p, k) for p in ("v1", "v_sir", "potency")}))(jnp.arange(n_occ))  # fmt: skip
            w = jnp.pad(w, ((0, 0), (0, carry.poles.shape[1] - 3)))

            def driver(tt):  # nM, the occasion each time falls in
                o = analytic.occasion_at(subject, tt)
                big = jnp.full(tt.shape, jnp.iinfo(jnp.int32).max)
                y = states(tt, big, jnp.full(tt.shape, last_seg), o, None, (0, 2))
                return jnp.maximum(jnp.sum(y * w[o][:, jnp.array([0, 2])], axis=-1), 0.0)

            def driver_grid(nodes, start_index):
                """At the nodes and step midpoints (bolus and infusion doses, no resets): per
                occasion, the exact recurrence over its own doses, plus the carried state."""
                # the driver's response per occasion, from the states' (A1 and As carry none
                # on the effect-site pole, which is dropped)
                r = carry.responses
                coef = jnp.einsum("on,oncm->ocm", w, r.coef)[..., :3]
                d_occ = jnp.asarray(subject.dose_occ)

                def run(k):
                    on = d_occ == k
                    dk = doses._replace(
                        amount=jnp.where(on, doses.amount, 0.0),
                        rate=jnp.where(on, doses.rate, 0.0),
                    )
                    rk = analytic.StateResponse(r.poles[k][..., :3], coef[k])
                    return linear_state_on_grid(rk, dk, nodes, start_index)

                cn_all, cm_all = jax.vmap(run)(jnp.arange(n_occ))  # [O, N], [O, N - 1]
                mid = nodes[:-1] + 0.5 * jnp.diff(nodes)
                out = []
                for tt, c_all in ((nodes, cn_all), (mid, cm_all)):
                    o = analytic.occasion_at(subject, tt)
                    seg0 = jnp.zeros(tt.shape, jnp.int32)  # no resets on this path
                    c = jnp.take_along_axis(c_all, o[None, :], axis=0)[0]
                    c = c + analytic.occasion_carried_output(carry, occasions, tt, seg0, o, w)
                    out.append(jnp.maximum(c, 0.0))
                return tuple(out)

            ys, ok = self._turnover(
                params,
                None,
                doses,
                subject,
                driver,
                driver_grid if self.dose_kinds is not None else None,
            )
            out.update(self._turnover_outputs(ys))
        out["ok"] = ok
        return out

    def _predict_binding(self, params, subject):
        """PK with saturable blood binding (see :func:`binding_vector_field`), by diffrax."""
        from pkpd.pk.nonlinear import predict_ode

        p = {k: _scalar(params, k) for k in _PK + tuple(BINDING_PARAMETERS)}

        def output(t, y, p):
            return {
                "temsirolimus": CONC_SCALE * y[0] / p["v1"],
                "sirolimus": CONC_SCALE * y[2] / p["v_sir"],
            }

        out, ok = predict_ode(
            binding_vector_field,
            3,
            p,
            subject,
            output_fn=output,
            dose_states={1: 0},
            solver="kvaerno5",
            rtol=self.rtol,
            atol=self.atol * 1e-3,
            max_steps=self.max_steps,
        )
        res = {e: out[e] for e in self.endpoints}
        res["ok"] = ok
        return res

    @staticmethod
    def _grid_inputs(doses, subject):
        """Start, end and activity of each dose's input, for :func:`pkpd.pd.forced.dose_grid`,
        then each later occasion's start (where parameters may change) as an input of no
        length (the first ``D`` entries are the doses)."""
        infusion = (doses.kind == analytic.INFUSION) | (doses.kind == analytic.SS_INFUSION)
        start = doses.time + doses.lag
        end = start + jnp.where(infusion, doses.duration, 0.0)
        if getattr(subject, "occ_start", None) is None:
            return start, end, doses.active
        b = jnp.asarray(subject.occ_start, dtype=float)[1:]
        on = jnp.asarray(subject.occ_valid)[1:]
        return (
            jnp.concatenate([start, b]),
            jnp.concatenate([end, b]),
            jnp.concatenate([doses.active, on]),
        )

    def precompute(self, subjects):
        """The VEGF/PD-1 grid of padded subjects, ``(nodes, index, start_index)`` as numpy
        arrays, or ``None`` when this model variant has no grid.

        Temsirolimus doses carry no lag and take their durations from the data, so the grid
        depends on the data only: a fit computes it once here instead of sorting the nodes
        inside every gradient (a third of the PD gradient's time on the full dataset).
        """
        if (
            self.binding
            or self.pd_solver != "grid"
            or not ({"vegf", "pd1_cd8"} & set(self.endpoints))
        ):
            return None
        from pkpd.pd.forced import dose_grid

        def one(subject):
            return dose_grid(*self._grid_inputs(self._doses(subject), subject), subject.point_time)

        subjects = jax.tree.map(jnp.asarray, subjects)
        return tuple(np.asarray(x) for x in jax.jit(jax.vmap(one))(subjects))

    def _turnover(self, params, driver, doses, subject, driver_fn=None, driver_grid=None):
        """VEGF and PD-1 ``[P, 2]`` and ``ok``, driven by the polyexponential ``driver``
        (nM per mg), or by ``driver_fn(times) -> nM`` when given (parameters per
        occasion; ``driver_grid(nodes, start_index)``, optional, gives the grid solver the
        driver at the nodes and step midpoints at once)."""
        from pkpd.ode import solve

        t = jnp.asarray(subject.point_time, dtype=float)
        last_seg = jnp.max(jnp.where(doses.active, doses.segment, 0))
        use_vegf = "vegf" in self.endpoints
        use_pd1 = "pd1_cd8" in self.endpoints
        k = turnover_parameters(params, use_vegf, use_pd1)
        # Parameters far outside their range (a sampler exploring, say, v_sir -> 0) make the
        # driver non-finite; the implicit solver must never see that (lineax raises on it), so
        # such a subject is solved with no drug and flagged ok=False (-inf log density).
        scalars = jnp.stack([k[n] for n in _TURNOVER_ORDER])
        valid = (
            jnp.all(jnp.isfinite(scalars))
            & jnp.all(scalars[jnp.array([0, 1, 3, 5, 7])] > 0)
            & (k["p0"] > 0)
            & (k["p0"] < 100)
        )
        if driver is not None:
            valid = (
                valid
                & jnp.all(jnp.isfinite(driver.poles))
                & jnp.all(driver.poles > 0)
                & jnp.all(jnp.isfinite(driver.coef))
            )
            driver = analytic.StateResponse(
                poles=jnp.where(valid, driver.poles, 1.0),
                coef=jnp.where(valid, driver.coef, 0.0),
            )
        k = {n: jnp.where(valid, v, _TURNOVER_INERT[n]) for n, v in k.items()}
        vegf_base, p0 = k["vegf_base"], k["p0"]

        def conc(tt):
            if driver_fn is not None:
                return driver_fn(tt[None])[0]
            seq = jnp.full((1,), jnp.iinfo(jnp.int32).max)
            c = analytic.superpose(driver, doses, tt[None], seq, last_seg[None], self.dose_kinds)[0]
            return jnp.maximum(c, 0.0)

        def field(tt, y, _args):
            c = conc(tt)
            (av, bv), (ap, bp) = vegf_rates(k, c), pd1_rates(k, c)
            return jnp.stack([av - bv * y[0], ap - bp * y[1]])

        if self.pd_solver == "grid":
            from pkpd.pd.forced import dose_grid, solve_forced

            grid = getattr(subject, "grid", None)
            if grid is not None:  # computed once from the data (precompute)
                nodes, index, start_index = grid
            else:
                nodes, index, start_index = dose_grid(*self._grid_inputs(doses, subject), t)
            start_index = start_index[: doses.time.shape[0]]  # the doses' (not occasions')
            conc = None
            if driver_grid is not None:
                conc = driver_grid(nodes, start_index)
            elif driver_fn is None and self.dose_kinds is not None:
                # bolus/infusion only, no resets: exact recurrence
                cn, cm = linear_state_on_grid(driver, doses, nodes, start_index)
                conc = (jnp.maximum(cn, 0.0), jnp.maximum(cm, 0.0))

            def conc_many(tt):
                if driver_fn is not None:
                    return driver_fn(tt)
                seq_ = jnp.full(tt.shape, jnp.iinfo(jnp.int32).max)
                c = analytic.superpose(
                    driver, doses, tt, seq_, jnp.full(tt.shape, last_seg), self.dose_kinds
                )
                return jnp.maximum(c, 0.0)

            # only the states asked for are integrated (a subject group with VEGF data only
            # pays for one state, not two); one not asked for keeps its baseline
            used = jnp.asarray([j for j, u in enumerate((use_vegf, use_pd1)) if u])

            def coef(c):
                rates = [r(k, c) for r, u in ((vegf_rates, use_vegf), (pd1_rates, use_pd1)) if u]
                return jnp.stack([a for a, _ in rates], -1), jnp.stack([b for _, b in rates], -1)

            y0 = jnp.stack([vegf_base, p0])
            ys, ok = solve_forced(coef, conc_many, y0[used], nodes, index, conc)
            ys = jnp.broadcast_to(y0, (index.shape[0], 2)).at[:, used].set(ys)
            return jnp.where(ok, ys, jnp.nan), ok & valid
        # The driver is continuous in time (infusions, no boluses into the PD states), with
        # kinks at infusion starts and ends that the adaptive step control resolves; one solve
        # over the whole horizon is much cheaper than restarting at every dose.
        y0 = jnp.stack([vegf_base, p0])
        ys, ok = solve(
            field,
            y0,
            None,
            t_eval=t,
            # the driver jumps where an occasion changes a volume or the potency
            jump_ts=None if driver_fn is None else jnp.asarray(subject.occ_start, dtype=float),
            t0=jnp.minimum(jnp.min(t), 0.0),
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
            solver=self.solver,
        )
        return ys, ok & valid


jax.tree_util.register_static(TemsirolimusModel)


#: Label reference values for a single 25 mg 30-min infusion (Torisel PI §12.3; CCO monograph).
LABEL_25MG = {
    "tem_cmax_ng_ml": 585.0,
    "tem_auc_ng_h_ml": 1627.0,
    "tem_t_half_h": 17.3,
    "sir_t_half_h": 54.6,
    "auc_ratio_sir_tem": 2.7,
}


def from_blocks(name: str = "temsirolimus_blocks", *, binding: bool = False, **options):
    """The joint model (module docstring) written with the public blocks of
    :mod:`pkpd.models.blocks`: the same endpoints, DVID codes, parameter names and units
    (``options`` go to :func:`pkpd.models.blocks.build`, e.g. ``solver="ode"``);
    ``binding=True``: saturable binding in blood (:func:`binding_vector_field`;
    ``PK(binding=True)``, the ``"ode"`` engine, for the PD endpoints too).

    The closed-form PK, the molar driver (an :class:`~pkpd.models.blocks.ActiveMoiety`), the
    S6K effect site and the VEGF/PD-1 grid are those of :class:`TemsirolimusModel`
    (tests/models/test_temsirolimus_model.py checks both against scipy;
    benchmarks/bench_temsirolimus_blocks.py compares their fits' gradients), and so are
    parameters per occasion (the whole chain carried over in closed form; tests/models/
    test_temsirolimus_iov.py checks both against scipy with the parameters switched).
    Simulations step its modal form (:meth:`~pkpd.models.blocks.BlockModel.modal_form`) and
    report the class's metrics: S6K trough inhibition, VEGF and PD-1 changes (PD blocks'
    :class:`~pkpd.models.blocks.Metric`), the molar sum of both analytes (``total``, an
    :class:`~pkpd.models.blocks.ActiveMoiety` with ``exposure=True``).
    """
    from pkpd.models import blocks as B

    return B.build(
        name,
        B.PK(compartments=2, endpoint="temsirolimus", code=1, unit="ng/mL", binding=binding,
             metabolite=B.Metabolite("sirolimus", molar_masses=(MW_TEM, MW_SIR), code=2,
                                     prefix="sir")),
        B.ActiveMoiety("driver", {"temsirolimus": 1.0, "sirolimus": "potency"}, unit="nM"),
        B.ActiveMoiety("total", {"temsirolimus": 1.0, "sirolimus": 1.0}, unit="nmol/L",
                       exposure=True),
        B.Direct("s6k", form="sigmoid_imax", unit="% of baseline", driver="driver",
                 effect_compartment=True, baseline=100.0, code=3,
                 metrics=["inhibition_trough"]),
        B.IndirectResponse("vegf", kind=1, unit="pg/mL", driver="driver", turnover="mrt", code=4,
                           metrics=["change_pct"]),
        B.BoundedTurnover("pd1_cd8", driver="driver", prefix="pd1", code=5,
                          metrics=[B.Metric("change_abs", name="pd1_change_week8", at_h=WEEK8_H)]),
        **options,
    )  # fmt: skip


#: The registered model ``"temsirolimus"``: written with the public blocks (:func:`from_blocks`),
#: as a user writes their own; :class:`TemsirolimusModel` (the hand-wired class it was before)
#: stays as the independent reference the tests and benchmarks compare it with.
temsirolimus = from_blocks("temsirolimus")
#: The models :mod:`pkpd.models` registers from this module.
REGISTERED = (temsirolimus,)

__all__ = [
    "BINDING_PARAMETERS",
    "binding_vector_field",
    "unbound_from_blood",
    "ENDPOINT_CODES",
    "ENDPOINT_MOLAR_MASSES",
    "ENDPOINTS",
    "LABEL_25MG",
    "MW_SIR",
    "MW_TEM",
    "PARAMETERS",
    "TYPICAL",
    "TemsirolimusModel",
    "WEEK8_H",
    "from_blocks",
    "pd1_rates",
    "s6k_from_effect",
    "turnover_parameters",
    "vegf_rates",
    "temsirolimus",
]
