r"""A model from its own differential equations: :class:`ODEModel`.

A pharmacometrician writes the right-hand side and the observations in ``jax.numpy``, names the
states, parameters (with units) and endpoints (with units), and says which data compartment
(``CMT``) doses which state; pkpd integrates the equations between dose events
(:func:`pkpd.pk.nonlinear.predict_ode`: boluses add to their state, infusions (``RATE`` or
``DUR``) are a constant input while they run, resets (EVID 3/4) and steady state are refused by
the solver's ``ok`` flag). It is a :class:`~pkpd.models.Model`: ``pkpd.fit(model, data,
priors=...)`` samples it with NUTS (``method="map"`` is refused with a clear error: the quick
fit needs forward-mode derivatives, which the solvers' adjoints do not give), and
:meth:`~ODEModel.predict` gives every endpoint at a subject's points. Its fits simulate
regimens (``pkpd.simulate``).

Which solver: ``"kvaerno5"`` (the default, diffrax's implicit solver) copes with stiff
equations — a fast rate constant next to slow ones — at a high price per gradient (~1 s for 24
subjects with an indirect response, benchmarks/bench_blocks.py); ``"dopri5"`` (pkpd's explicit
Dormand–Prince solver with its own adjoint, :func:`pkpd.ode.solve_pieces`) is the one to fit
non-stiff equations with (~12 ms for the same 24 subjects at the default tolerance, ~4 ms at
``rtol=1e-5``; diffrax's explicit ``"tsit5"`` ~31 ms). An explicit solver on stiff equations runs
out of steps and the solve fails (``ok`` False: the draw is rejected) rather than giving wrong
numbers. The chains of a model solved by diffrax run in turn, not in parallel over devices
(diffrax issue 765); ``"dopri5"``'s run in parallel. Compiling the sampler takes 10–60 s::

    import jax.numpy as jnp
    from pkpd.models import ODEModel, register

    def rhs(t, y, p):
        conc = y["central"] / p["v"]                       # mg/L
        inhibition = p["imax"] * conc / (p["ic50"] + conc)
        return {
            "depot": -p["ka"] * y["depot"],
            "central": p["ka"] * y["depot"] - p["vmax"] * conc / (p["km"] + conc),
            "response": p["kin"] * (1 - inhibition) - p["kout"] * y["response"],
        }

    def observe(t, y, p):
        return {"cp": 1000 * y["central"] / p["v"], "marker": y["response"]}

    model = register(ODEModel(
        name="mm_idr",
        states=("depot", "central", "response"),
        params={"ka": "1/h", "v": "L", "vmax": "mg/h", "km": "mg/L", "imax": "",
                "ic50": "mg/L", "kin": "U/h", "kout": "1/h"},
        outputs={"cp": "ng/mL", "marker": "U"},
        rhs=rhs,
        observe=observe,
        doses={1: "depot", 2: "central"},
        initial=lambda p: {"response": p["kin"] / p["kout"]},   # at baseline before any dose
        concentrations={"cp": "v"},
    ))

Conventions: amounts in mg and time in h, as in the data (doses arrive in mg; an endpoint in
ng/mL from an amount in mg and a volume in L is ``1000 * amount / v``). ``y`` and the returned
derivatives are dicts by state name; every state must be given a derivative and every endpoint
an observation (checked when the model is made, by calling both once with every value 1).
``initial(p)`` gives the states that do not start at 0 (at the first event or point, or time 0
if earlier). Dose modifiers (lag time, bioavailability as parameters) are not applied: write
them into the equations (a depot state) or the data.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp

from pkpd.models.base import Model, known_endpoints


class _Used(dict):
    """A parameter dict that records which names the equations read (``used``)."""

    def __init__(self, *a):
        super().__init__(*a)
        self.used: set = set()

    def __getitem__(self, k):
        self.used.add(k)
        return super().__getitem__(k)

    def get(self, k, default=None):
        self.used.add(k)
        return super().get(k, default)

    def _all(self):
        self.used.update(super().keys())

    def __iter__(self):
        self._all()
        return super().__iter__()

    def keys(self):
        self._all()
        return super().keys()

    def items(self):
        self._all()
        return super().items()

    def values(self):
        self._all()
        return super().values()


@dataclass(frozen=True, eq=False)
class ODEModel(Model):
    """A model given by its differential equations (module docstring).

    Parameters
    ----------
    name : str
        The model's name (fit files store it; :func:`pkpd.models.register` makes it findable).
    states : sequence of str
        State names, in order (amounts in mg for drug compartments, any unit for responses).
    params : mapping of str to str
        Parameter name → unit. The priors file names the same parameters in the same units.
    outputs : mapping of str to str
        Endpoint → unit of what ``observe`` returns for it.
    rhs : callable
        ``rhs(t, y, p) -> {state: dstate/dt}``; ``t`` in h, ``y`` the states by name, ``p`` the
        parameters by name (scalars). Pure ``jax.numpy`` (it is differentiated).
    observe : callable
        ``observe(t, y, p) -> {endpoint: value}`` at one time.
    doses : mapping of int to str
        Data compartment number (``CMT``) → the state its doses go into.
    default_dose : int, optional
        The compartment of a dose with ``CMT`` 0 or missing (default: the first of ``doses``).
    initial : callable, optional
        ``initial(p) -> {state: value}`` for states that do not start at 0.
    codes : mapping of int to str, optional
        DVID code → endpoint (default: a one-endpoint model takes the data's one code; a
        several-endpoint model without codes needs ``--dvid`` or an ENDPOINT column).
    concentrations : mapping of str to str, optional
        Concentration endpoint → the volume parameter that scales it: simulations give these
        endpoints Cmax, Ctrough and AUC, and the data's scale is checked against the volume.
    solver : {"kvaerno5", "tsit5", "dopri5"}
        ``"kvaerno5"`` (default): diffrax's implicit solver, for stiff equations (fast rate
        constants next to slow ones); ``"tsit5"``: diffrax's explicit one; ``"dopri5"``:
        pkpd's explicit Dormand–Prince solver with its own adjoint, the fast choice for
        non-stiff equations (2.5–8× cheaper per gradient than ``"tsit5"``; see
        :func:`pkpd.ode.solve_pieces`). On stiff equations an explicit solver runs out of
        steps and the solve fails (``ok`` False) rather than giving a wrong answer.
    rtol, atol, max_steps
        Tolerances and step budget, as in :func:`pkpd.pk.nonlinear.predict_ode` (``None``:
        the solver's default budget). On benchmarks/bench_blocks.py's model ``rtol=1e-5``
        moves the log density by 6e-5 from the default 1e-8 (values within ~5e-6 relative)
        and makes a ``"dopri5"`` gradient 3× cheaper.
    priors : mapping, optional
        The model's own priors in the priors file's parsed form: the tables ``parameters``
        and ``residual`` (and optionally ``covariates``), e.g. ``{"parameters": {"cl":
        {"unit": "L/h", "prior": {"family": "lognormal", "median": 5.0, "sd_log": 0.5}}}}``.
        A fit given no priors file uses them, and ``pkpd priors --model FILE.py --out
        priors.toml`` writes them out.
    """

    name: str
    states: Sequence[str]
    params: Mapping[str, str]
    outputs: Mapping[str, str]
    rhs: Callable
    observe: Callable
    doses: Mapping[int, str]
    default_dose: int | None = None
    initial: Callable | None = None
    codes: Mapping[int, str] | None = None
    concentrations: Mapping[str, str] = field(default_factory=dict)
    solver: str = "kvaerno5"
    rtol: float = 1e-8
    atol: float = 1e-10
    max_steps: int | None = None
    priors: Mapping[str, Any] | None = None
    #: Endpoints predicted (a subset after :meth:`with_endpoints`; ``None``: all).
    selected: tuple[str, ...] | None = None

    def __post_init__(self):
        object.__setattr__(self, "states", tuple(self.states))
        object.__setattr__(self, "params", dict(self.params))
        object.__setattr__(self, "outputs", dict(self.outputs))
        object.__setattr__(self, "doses", {int(k): v for k, v in self.doses.items()})
        if self.codes is not None:
            object.__setattr__(self, "codes", {int(k): v for k, v in self.codes.items()})
        object.__setattr__(self, "concentrations", dict(self.concentrations))
        problems = self._definition_problems()
        if problems:
            raise ValueError(f"ODEModel {self.name!r}: " + "; ".join(problems))

    # -- the definition checked once ------------------------------------------------------------
    def _definition_problems(self) -> list[str]:
        out = []
        if not isinstance(self.name, str) or not self.name:
            out.append("name must be a non-empty str")
        if not self.states or len(set(self.states)) != len(self.states):
            out.append(f"states must be distinct names, got {list(self.states)}")
        if not self.params:
            out.append("no parameters (params)")
        if not self.outputs:
            out.append("no endpoints (outputs)")
        if not self.doses:
            out.append("doses must map at least one CMT number to a state")
        for cmt, state in self.doses.items():
            if state not in self.states:
                out.append(f"doses: CMT {cmt} goes to {state!r}, which is not a state")
        if not (self.solver in ("kvaerno5", "tsit5", "dopri5") or not isinstance(self.solver, str)):
            out.append(f"solver {self.solver!r} is not known; use 'kvaerno5', 'tsit5' or 'dopri5'")
        if self.default_dose is not None and self.default_dose not in self.doses:
            out.append(f"default_dose {self.default_dose} is not a CMT of doses")
        for ep, volume in self.concentrations.items():
            if ep not in self.outputs:
                out.append(f"concentrations: {ep!r} is not an endpoint")
            if volume not in self.params:
                out.append(f"concentrations: volume {volume!r} of {ep!r} is not a parameter")
        for code, ep in (self.codes or {}).items():
            if ep not in self.outputs:
                out.append(f"codes: {code} -> {ep!r}, which is not an endpoint")
        if out:
            return out
        ones_y = {s: jnp.asarray(1.0) for s in self.states}
        ones_p = _Used({p: jnp.asarray(1.0) for p in self.params})
        try:
            d = self.rhs(jnp.asarray(0.0), ones_y, ones_p)
            obs = self.observe(jnp.asarray(0.0), ones_y, ones_p)
            init = self.initial(ones_p) if self.initial is not None else {}
        except KeyError as e:  # a name used in the equations that is not declared
            return [f"the equations use {e.args[0]!r}, which is not a declared state or parameter"]
        for what, got, want in (
            ("rhs", d, self.states),
            ("observe", obs, tuple(self.outputs)),
        ):
            if not isinstance(got, Mapping):
                out.append(f"{what} must return a dict by name, got {type(got).__name__}")
                continue
            missing = [k for k in want if k not in got]
            extra = [k for k in got if k not in want]
            if missing:
                out.append(f"{what} returns nothing for {missing}")
            if extra:
                out.append(f"{what} returns {extra}, which are not declared")
        if not isinstance(init, Mapping) or any(k not in self.states for k in init):
            out.append(f"initial must return {{state: value}} for declared states, got {init!r}")
        unused = [p for p in self.params if p not in ones_p.used]
        if unused:
            out.append(
                f"parameter(s) {', '.join(unused)} are declared but rhs, observe and initial "
                "never use them (the data could not inform them); remove them from params"
            )
        return out

    # -- the contract -------------------------------------------------------------------------
    @property
    def parameters(self) -> dict[str, str]:
        return dict(self.params)

    @property
    def endpoint_units(self) -> dict[str, str]:
        return {e: self.outputs[e] for e in self.endpoints}

    @property
    def endpoint_codes(self) -> dict[int, str] | None:
        return None if self.codes is None else dict(self.codes)

    @property
    def compartments(self) -> dict[int, str]:
        return dict(self.doses)

    @property
    def default_dose_compartment(self) -> int:
        return self.default_dose if self.default_dose is not None else next(iter(self.doses))

    @property
    def dose_compartment_names(self) -> tuple[str, ...]:
        return tuple(self.doses.values())

    @property
    def concentration_endpoints(self) -> tuple[str, ...]:
        return tuple(e for e in self.concentrations if e in self.endpoints)

    @property
    def concentration_volumes(self) -> dict[str, str]:
        return {e: v for e, v in self.concentrations.items() if e in self.endpoints}

    @property
    def endpoints(self) -> tuple[str, ...]:
        return self.selected if self.selected is not None else tuple(self.outputs)

    def with_endpoints(self, endpoints: Sequence[str]) -> ODEModel:
        eps = known_endpoints(self.name, endpoints, tuple(self.outputs))
        return dataclasses.replace(self, selected=eps)

    def check_subject(self, subject) -> list[str]:
        import numpy as np

        cmt = np.asarray(subject.dose_cmt)
        mask = np.asarray(subject.dose_mask, dtype=bool)
        used = set(np.unique(cmt[mask]).tolist()) - {0}
        bad = sorted(used - set(self.doses))
        if bad:
            return [
                f"doses into compartment(s) {bad}: model {self.name!r} doses "
                + ", ".join(f"CMT {k} ({v})" for k, v in self.doses.items())
            ]
        return []

    @property
    def default_priors(self) -> Mapping[str, Any] | None:
        if self.priors is None:
            return None
        return {"model": {"name": self.name}, **dict(self.priors)}

    @property
    def occasion_parameters(self) -> tuple[str, ...]:
        """Every parameter may change between occasions (see :meth:`predict`)."""
        return tuple(self.params)

    def predict(self, params, subject):
        """Every endpoint at each point of one subject (``{endpoint: [P], "ok": bool}``).

        A parameter may be given per occasion (``[O]``, data with occasions): the equations
        then use occasion ``k``'s value from its first record's time until the next occasion
        starts (the solver restarts there), so drug given in one occasion and still present in
        the next simply moves on under the new values; observations at a time use the values
        in force then (at an occasion's first time, the new occasion's). ``initial`` sees the
        first occasion's values.
        """
        from pkpd.pk.nonlinear import predict_ode

        names = self.states
        index = {s: i for i, s in enumerate(names)}
        eps = self.endpoints
        by_occ = [k for k, v in params.items() if jnp.ndim(v) == 1]
        jump_ts = None
        if by_occ:
            if getattr(subject, "occ_start", None) is None:
                raise ValueError(
                    f"model {self.name!r}: parameter(s) {', '.join(by_occ)} given per occasion, "
                    "but the subject's data have no occasions"
                )
            starts = jnp.asarray(subject.occ_start)
            jump_ts = starts

            def at(t, p):  # the values in force at time t
                k = jnp.clip(jnp.searchsorted(starts, t, side="right") - 1, 0, starts.shape[0] - 1)
                return {n: (v[k] if n in by_occ else v) for n, v in p.items()}

            first = {n: (v[0] if n in by_occ else v) for n, v in params.items()}
        else:

            def at(t, p):
                return p

            first = params

        def field_fn(t, y, p):
            d = self.rhs(t, {s: y[i] for i, s in enumerate(names)}, at(t, p))
            return jnp.stack([jnp.broadcast_to(jnp.asarray(d[s], y.dtype), ()) for s in names])

        def output_fn(t, y, p):
            obs = self.observe(t, {s: y[i] for i, s in enumerate(names)}, at(t, p))
            return {e: obs[e] for e in eps}

        dtype = jnp.result_type(jnp.asarray(subject.point_time).dtype, jnp.float32)
        y0 = jnp.zeros(len(names), dtype)
        if self.initial is not None:
            for s, v in self.initial(first).items():
                y0 = y0.at[index[s]].set(v)
        out, ok = predict_ode(
            field_fn,
            len(names),
            params,
            subject,
            output_fn=output_fn,
            dose_states={k: index[v] for k, v in self.doses.items()},
            default_state=index[self.doses[self.default_dose_compartment]],
            y0=y0,
            jump_ts=jump_ts,
            solver=self.solver,
            rtol=self.rtol,
            atol=self.atol,
            max_steps=self.max_steps,
        )
        return {**out, "ok": ok}


jax.tree_util.register_static(ODEModel)

__all__ = ["ODEModel"]
