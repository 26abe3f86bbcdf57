r"""Generic linear PK models with NONMEM's compartment numbering (ADVAN1-4, 11, 12).

=================  ==============================================  =========================
model              compartments (CMT number: name)                 parameters
=================  ==============================================  =========================
``one_cmt_iv``     1 central                                       cl, v
``one_cmt_oral``   1 depot, 2 central                              cl, v, ka
``two_cmt_iv``     1 central, 2 peripheral                         cl, v1, q, v2
``two_cmt_oral``   1 depot, 2 central, 3 peripheral                cl, v1, q, v2, ka
``three_cmt_iv``   1 central, 2 peripheral1, 3 peripheral2         cl, v1, q, v2, q2, v3
``three_cmt_oral`` 1 depot, 2 central, 3 peripheral1, 4 peripheral2 cl, v1, q, v2, q2, v3, ka
=================  ==============================================  =========================

Equations (amounts in mg, time in h; ``p`` runs over the peripheral compartments, with
``Q1 = q, V_p = v2`` and ``Q2 = q2, V_p = v3``)::

    dA_depot/dt   = -ka·A_depot                                   (+ infusions into the depot)
    dA_central/dt =  ka·A_depot - (cl/v1)·A_central
                     - Σp (Qp/v1)·A_central + Σp (Qp/Vp)·A_p      (+ infusions into the central)
    dA_p/dt       =  (Qp/v1)·A_central - (Qp/Vp)·A_p

    conc = 1000 · A_central / v1                                  (ng/mL)

The registered models are composed from a PK block (:mod:`pkpd.models.blocks`,
``build(name, PK(compartments=n, absorption=...))``) as a user's model is; the block picks
:class:`LinearPKModel`, this module's closed forms, as its engine.

Units: ``cl``, ``q``, ``q2`` L/h; ``v``, ``v1``, ``v2``, ``v3`` L; ``ka`` 1/h; doses mg. The
endpoint ``"conc"`` is the central concentration in **ng/mL** (= µg/L): mg/L times
:data:`CONC_SCALE` = 1000, as NONMEM's ``CP = A(2)/(V/1000)``. Data in other units (``DVU``
column, ``read_dataset(..., dv_units={"conc": "mg/L"})``) are converted to ng/mL on read; its
one endpoint takes the data's one ``DVID`` code, whatever it is (:attr:`LinearPKModel.endpoint_codes`).

Dose modifiers, per dose compartment ``<cmt>`` in ``depot`` (oral models) and ``central``:
``lag_<cmt>`` (h, default 0), ``f_<cmt>`` (bioavailability, default 1), ``dur_<cmt>`` (h,
used by RATE=-2 records), ``rate_<cmt>`` (mg/h, used by RATE=-1 records). As in NONMEM, each
acts only on doses into its compartment (``f_central``/``lag_central`` leave depot doses alone).
Every modifier may be a scalar or an array ``[D]``, one value per dose event, read on the dose's
source record (e.g. ``subject.dose_cov[:, k]`` for a data column, as NONMEM's ``$PK`` reads a
data item); ADDL doses carry the values of their record. Structural parameters (``cl``, ``v``,
..., ``ka``) are scalars per subject: the analytic engine superposes doses with one set of
disposition parameters.

``CMT 0`` (or missing) means the default dose compartment (depot for oral models, central for
IV models) on dose records. The ``"conc"`` endpoint is always the central compartment,
whatever ``CMT`` an observation record carries.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np

from pkpd.models.base import (
    ModalForm,
    Model,
    infusions_across_occasions,
    occasion_count,
    occasion_values,
)
from pkpd.pk import analytic

#: mg/L → ng/mL.
CONC_SCALE = 1000.0

_UNITS = {
    "cl": "L/h",
    "v": "L",
    "v1": "L",
    "q": "L/h",
    "v2": "L",
    "q2": "L/h",
    "v3": "L",
    "ka": "1/h",
}
_MOD_UNITS = {"lag": "h", "f": "1", "dur": "h", "rate": "mg/h"}


@dataclass(frozen=True)
class LinearPKModel(Model):
    """A linear mammillary PK model (1-3 disposition compartments, optional depot).

    Immutable and hashable; registered as a static pytree node, so it can be passed to or
    closed over by ``jax.jit``/``jax.vmap``.

    Attributes
    ----------
    name : str
        Registry name (``pkpd.models.load_model(name)``).
    n_compartments : int
        Disposition compartments: 1, 2 or 3.
    absorption : bool
        First-order absorption from a depot (compartment 1) when True.

    Examples
    --------
    >>> import numpy as np, pandas as pd, pkpd
    >>> from pkpd.models import load_model
    >>> df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, 2.0], "EVID": [1, 0], "AMT": [100, 0],
    ...                    "DV": [np.nan, 1.0]})
    >>> padded = pkpd.read_dataset(df).to_arrays()
    >>> subject = jax.tree.map(lambda x: x[0], padded.data)
    >>> model = load_model("one_cmt_oral")
    >>> out = model.predict({"cl": 1.1, "v": 20.0, "ka": 1.5}, subject)
    >>> round(float(out["conc"][0]), 2)   # ng/mL at 2 h after 100 mg
    4391.25
    """

    name: str
    n_compartments: int
    absorption: bool
    #: Dose kinds the data can hold (static; :func:`pkpd.pk.analytic.kinds_in_data`). A fit
    #: sets it from its data so the engine skips the steady-state formulas; None = all.
    dose_kinds: tuple | None = None

    def __post_init__(self):
        if self.n_compartments not in (1, 2, 3):
            raise ValueError(f"n_compartments must be 1, 2 or 3, got {self.n_compartments}")

    # -- description ---------------------------------------------------------------------------
    @property
    def structural_parameters(self) -> tuple[str, ...]:
        names = {1: ("cl", "v"), 2: ("cl", "v1", "q", "v2"), 3: ("cl", "v1", "q", "v2", "q2", "v3")}
        return names[self.n_compartments] + (("ka",) if self.absorption else ())

    @property
    def dose_compartment_names(self) -> tuple[str, ...]:
        return ("depot", "central") if self.absorption else ("central",)

    @property
    def modifier_parameters(self) -> tuple[str, ...]:
        return tuple(
            f"{m}_{c}" for c in self.dose_compartment_names for m in ("lag", "f", "dur", "rate")
        )

    @property
    def parameters(self) -> dict[str, str]:
        """Parameter names and units (structural first, then dose modifiers)."""
        out = {p: _UNITS[p] for p in self.structural_parameters}
        for name in self.modifier_parameters:
            out[name] = _MOD_UNITS[name.split("_")[0]]
        return out

    @property
    def compartments(self) -> dict[int, str]:
        """NONMEM compartment numbers and names."""
        names = ["depot"] if self.absorption else []
        names.append("central")
        if self.n_compartments == 2:
            names.append("peripheral")
        elif self.n_compartments == 3:
            names += ["peripheral1", "peripheral2"]
        return {i + 1: n for i, n in enumerate(names)}

    @property
    def endpoint_units(self) -> dict[str, str]:
        """The one endpoint and its unit: ``{"conc": "ng/mL"}``."""
        return {"conc": "ng/mL"}

    @property
    def concentration_endpoints(self) -> tuple[str, ...]:
        return ("conc",)

    @property
    def concentration_volumes(self) -> dict[str, str]:
        return {"conc": "v" if self.n_compartments == 1 else "v1"}

    @property
    def endpoint_codes(self) -> None:
        """No fixed DVID codes: the one endpoint ``conc`` takes the data's one ``DVID`` code,
        whatever it is (``pkpd.read_dataset(..., model=...)``); data with several codes need a
        mapping (``endpoints={1: "conc", ...}``, CLI ``--dvid 1=conc,...``)."""
        return None

    @property
    def central_compartment(self) -> int:
        return 2 if self.absorption else 1

    @property
    def default_dose_compartment(self) -> int:
        return 1

    @property
    def all_parameters(self) -> dict[str, str]:
        return self.parameters

    def with_dose_kinds(self, kinds: tuple | None) -> LinearPKModel:
        return dataclasses.replace(self, dose_kinds=kinds)

    # -- parameters ----------------------------------------------------------------------------
    def check_parameters(self, params: Mapping[str, object]) -> None:
        """Raise ``ValueError`` naming unknown or missing parameters (static check)."""
        unknown = sorted(set(params) - set(self.parameters))
        missing = [p for p in self.structural_parameters if p not in params]
        problems = []
        if unknown:
            problems.append(f"unknown parameter(s) {', '.join(unknown)}")
        if missing:
            problems.append(f"missing parameter(s) {', '.join(missing)}")
        if problems:
            raise ValueError(
                f"model {self.name!r}: {'; '.join(problems)}. Its parameters are: "
                + ", ".join(f"{k} ({u})" for k, u in self.parameters.items())
                + f"; required: {', '.join(self.structural_parameters)}"
            )

    def _structural(self, params, n_occ: int | None = None):
        """The structural parameters as scalars or, with ``n_occ``, as ``[n_occ]`` (a scalar
        broadcast to every occasion)."""
        out = {}
        for p in self.structural_parameters:
            v = jnp.asarray(params[p], dtype=float)
            if n_occ is None and v.ndim != 0:
                raise ValueError(
                    f"structural parameter {p!r} must be a scalar for one subject, or one value "
                    f"per occasion ([O]) with data that have occasions; got shape "
                    f"{tuple(v.shape)}"
                )
            out[p] = v if n_occ is None else occasion_values(p, v, n_occ)
        return out

    @property
    def occasion_parameters(self) -> tuple[str, ...]:
        """Every structural parameter may change between occasions (see :meth:`predict`)."""
        return self.structural_parameters

    def _by_occasion(self, params) -> bool:
        return any(jnp.ndim(params[p]) == 1 for p in self.structural_parameters if p in params)

    def _occasion_amounts(self, params, subject, states) -> jnp.ndarray:
        """Amounts (mg) of ``states`` at each point, ``[P, len(states)]``, with structural
        parameters per occasion (the :meth:`predict` docstring's semantics)."""
        n_occ = occasion_count(self.name, params, subject, self.modifier_parameters)
        sp = self._structural(params, n_occ)
        n = len(self.compartments)

        def system(k):
            spk = {p: v[k] for p, v in sp.items()}
            disp, ka = self._disposition(spk), spk.get("ka")
            responses = [analytic.state_response(disp, ka, state=i) for i in range(n)]
            return responses, analytic.state_propagator(disp, ka)

        return analytic.occasion_superpose(
            system,
            self._doses(params, subject),
            subject.dose_occ,
            (subject.occ_start, subject.occ_seq, subject.occ_segment),
            jnp.asarray(subject.point_time, dtype=float),
            jnp.asarray(subject.point_seq),
            jnp.asarray(subject.point_segment),
            jnp.asarray(subject.point_occ),
            self.dose_kinds,
            getattr(subject, "pairs", None),
            states,
        )

    def _disposition(self, sp):
        if self.n_compartments == 1:
            return analytic.disposition(sp["cl"], sp["v"])
        if self.n_compartments == 2:
            return analytic.disposition(sp["cl"], sp["v1"], [sp["q"]], [sp["v2"]])
        return analytic.disposition(sp["cl"], sp["v1"], [sp["q"], sp["q2"]], [sp["v2"], sp["v3"]])

    def _doses(self, params, subject):
        modifiers = {}
        for c, cname in enumerate(self.dose_compartment_names):
            modifiers[c] = {
                m: params[f"{m}_{cname}"]
                for m in ("lag", "f", "dur", "rate")
                if f"{m}_{cname}" in params
            }
        number = {n: i for i, n in enumerate(self.dose_compartment_names)}
        cmts = {k: number[v] for k, v in self.compartments.items() if v in number}
        return analytic.dose_terms(subject, modifiers, cmts, default_compartment=0)

    # -- predictions ---------------------------------------------------------------------------
    def amounts(self, params: Mapping[str, object], subject) -> jnp.ndarray:
        """Amount (mg) in every compartment at each prediction point, ``[P, n_states]``.

        Columns follow :attr:`compartments` (compartment number ``i`` in column ``i-1``).
        """
        self.check_parameters(params)
        if self._by_occasion(params):
            return self._occasion_amounts(params, subject, tuple(range(len(self.compartments))))
        sp = self._structural(params)
        disp = self._disposition(sp)
        doses = self._doses(params, subject)
        ka = sp.get("ka")
        t = jnp.asarray(subject.point_time, dtype=float)
        cols = [
            analytic.superpose(
                analytic.state_response(disp, ka, state=i),
                doses,
                t,
                jnp.asarray(subject.point_seq),
                jnp.asarray(subject.point_segment),
                self.dose_kinds,
                getattr(subject, "pairs", None),
            )
            for i in range(len(self.compartments))
        ]
        return jnp.stack(cols, axis=-1)

    def predict(self, params: Mapping[str, object], subject) -> dict[str, jnp.ndarray]:
        """Central concentration (ng/mL) at each prediction point of one subject.

        Parameters
        ----------
        params : mapping of str to scalar or array
            Structural parameters (scalars, or ``[O]``: one value per occasion of the subject)
            and optional dose modifiers (scalars or ``[D]``); see the module docstring. Units
            as in :attr:`parameters`.
        subject : SubjectData
            One subject (no leading axis), e.g. ``jax.tree.map(lambda x: x[i], padded.data)``.

        Returns
        -------
        dict
            ``{"conc": array [P]}`` in ng/mL, ``1000 · A_central / V_central``.

        Notes
        -----
        **Parameters per occasion** (inter-occasion variability): parameters are constant
        within an occasion and change at its first record, as in NONMEM. Drug given in one
        occasion and still present in the next is carried over as amounts: at each occasion's
        start the amount in every compartment (depot, central, peripherals) is what the earlier
        doses left there, and from then on it moves with the new occasion's parameters
        (``expm(M_k u)``, :func:`pkpd.pk.analytic.state_propagator`); doses of the occasion
        superpose with its parameters. The concentration is the central amount over the
        current occasion's volume. A reset (EVID 3/4, SS=1) drops what was carried. Lags and
        infusion times must then come from the data (a modelled ``lag_``/``dur_``/``rate_``
        parameter is refused), and an infusion must end before the next occasion starts (a
        fit checks this before sampling).
        """
        self.check_parameters(params)
        if self._by_occasion(params):
            amount = self._occasion_amounts(params, subject, (1 if self.absorption else 0,))[:, 0]
            vol = jnp.asarray(params["v" if self.n_compartments == 1 else "v1"], dtype=float)
            if vol.ndim == 1:
                vol = vol[jnp.asarray(subject.point_occ)]
            return {"conc": CONC_SCALE * amount / vol}
        sp = self._structural(params)
        disp = self._disposition(sp)
        doses = self._doses(params, subject)
        state = 1 if self.absorption else 0
        amount = analytic.superpose(
            analytic.state_response(disp, sp.get("ka"), state=state),
            doses,
            jnp.asarray(subject.point_time, dtype=float),
            jnp.asarray(subject.point_seq),
            jnp.asarray(subject.point_segment),
            self.dose_kinds,
            getattr(subject, "pairs", None),
        )
        v = sp["v"] if self.n_compartments == 1 else sp["v1"]
        return {"conc": CONC_SCALE * amount / v}

    # -- fast form for simulation --------------------------------------------------------------
    def modal_form(self, params: Mapping[str, object]) -> ModalForm:
        """Poles and the ``conc`` coefficients (ng/mL per mg) of a dose into the default
        compartment (:class:`pkpd.models.base.ModalForm`)."""
        sp = self._structural(params)
        resp = analytic.state_response(
            self._disposition(sp), sp.get("ka"), state=1 if self.absorption else 0
        )
        v = sp["v"] if self.n_compartments == 1 else sp["v1"]
        return ModalForm(resp.poles[0], {"conc": resp.coef[0] * CONC_SCALE / v})

    def modal_parameters_supported(self, parameters) -> bool:
        """No dose modifiers (lag, F, modelled rate or duration): structural parameters only."""
        return set(parameters) <= set(self.structural_parameters)

    # -- data checks (outside jit) -------------------------------------------------------------
    def occasion_problems(self, subjects, line) -> list[str]:
        """Infusions still running when the next occasion starts
        (:func:`pkpd.models.base.infusions_across_occasions`)."""
        return infusions_across_occasions(self.name, subjects, line)

    def check_subject(self, subject) -> list[str]:
        """Problems that make predictions meaningless (doses into a compartment the model
        cannot dose); an empty list when none. Works on one subject or a padded batch."""
        cmt = np.asarray(subject.dose_cmt)
        mask = analytic.host_active_doses(subject)
        allowed = [0] + [
            k for k, v in self.compartments.items() if v in self.dose_compartment_names
        ]
        bad = sorted(set(cmt[mask & ~np.isin(cmt, allowed)].tolist()))
        if bad:
            return [
                f"doses into compartment(s) {bad}; model {self.name!r} takes doses into "
                + ", ".join(f"{k} ({self.compartments[k]})" for k in allowed if k)
            ]
        return []


jax.tree_util.register_static(LinearPKModel)

one_cmt_iv = LinearPKModel("one_cmt_iv", 1, False)
one_cmt_oral = LinearPKModel("one_cmt_oral", 1, True)
two_cmt_iv = LinearPKModel("two_cmt_iv", 2, False)
two_cmt_oral = LinearPKModel("two_cmt_oral", 2, True)
three_cmt_iv = LinearPKModel("three_cmt_iv", 3, False)
three_cmt_oral = LinearPKModel("three_cmt_oral", 3, True)

#: The analytic engines of the six models, by name (what their blocks run on).
LIBRARY = {
    m.name: m
    for m in (one_cmt_iv, one_cmt_oral, two_cmt_iv, two_cmt_oral, three_cmt_iv, three_cmt_oral)
}


def _from_blocks(engine: LinearPKModel):
    """The registered model: built from a PK block like a user's model
    (:mod:`pkpd.models.blocks`), which picks this module's closed forms as its engine."""
    from pkpd.models.blocks import PK, build

    absorption = "first_order" if engine.absorption else "iv"
    return build(engine.name, PK(compartments=engine.n_compartments, absorption=absorption))


#: The models :mod:`pkpd.models` registers from this module: each composed from a PK block.
REGISTERED = tuple(_from_blocks(m) for m in LIBRARY.values())
