r"""General linear compartment systems by the matrix exponential.

For any system :math:`\dot A = K A + u(t)` that a user wires up from first-order flows
(parent → metabolite, transit chains, target compartments...), the amount after a dose is exact:

* bolus of amount :math:`D` into compartment :math:`c` (unit vector :math:`b`), time :math:`s`
  after it: :math:`A(s) = e^{Ks} b D`;
* zero-order infusion at rate :math:`R` for :math:`T`:
  :math:`A(s) = M(\min(s,T))\, b R` while infusing and
  :math:`e^{K(s-T)} M(T)\, b R` after, with :math:`M(\tau) = \int_0^\tau e^{Ku}\,du`, the top-right
  block of :math:`\exp\begin{pmatrix} K & b \\ 0 & 0 \end{pmatrix}\tau` (Van Loan), which needs no
  inverse of :math:`K` (so it also holds for systems without elimination);
* steady state (SS=1/2) of doses every :math:`\tau`, last at the record time: the geometric sum
  :math:`\sum_{k \ge k_1} e^{K(s + k\tau - T)} = e^{K(s + k_1\tau - T)}(I - e^{K\tau})^{-1}`
  (bolus: :math:`T = 0`); infusions must not be longer than :math:`\tau` here (the analytic
  mammillary models handle that case).

Doses superpose (the system is linear) with the event semantics of :mod:`pkpd.pk.analytic`
(segments, ``seq`` at equal times, lag and bioavailability per dose compartment). Cost: one
matrix exponential of size ``n+1`` per dose and prediction point, so this engine is for small
custom systems; closed-form models are faster where they exist.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.linalg import expm

from pkpd.pk import analytic

CONC_SCALE = 1000.0  # mg/L -> ng/mL


def _flow_matrix(n: int, flows, params) -> jnp.ndarray:
    K = jnp.zeros((n, n))
    for (src, dst), name in flows:
        k = jnp.asarray(params[name], dtype=float)
        K = K.at[src, src].add(-k)
        if dst is not None:
            K = K.at[dst, src].add(k)
    return K


def _integral_block(K, b, tau):
    """``(e^{K tau} b, M(tau) b)`` from one Van Loan exponential."""
    n = K.shape[0]
    big = jnp.zeros((n + 1, n + 1)).at[:n, :n].set(K).at[:n, n].set(b)
    E = expm(big * tau)
    return E[:n, :n] @ b, E[:n, n]


def superpose_linear(K, dose_vectors, doses: analytic.DoseTerms, t, seq, segment):
    """Amounts ``[P, n]`` in every compartment at the points, summed over doses.

    Parameters
    ----------
    K : array [n, n]
        System matrix (1/h).
    dose_vectors : array [C, n]
        Unit vector of each dose compartment.
    doses : DoseTerms
        From :func:`pkpd.pk.analytic.dose_terms`.
    t, seq, segment : arrays [P]
    """
    n = K.shape[0]
    eye = jnp.eye(n)

    def one(time, lag, amount, rate, duration, tau, kind, cidx):
        b = dose_vectors[cidx]
        is_ss = (kind == analytic.SS_BOLUS) | (kind == analytic.SS_INFUSION)
        is_inf = (kind == analytic.INFUSION) | (kind == analytic.SS_INFUSION)
        T = jnp.where(is_inf, duration, 0.0)
        dose_amt = jnp.where(is_inf, rate, amount)  # infusions scale M(T) b by the rate
        E_tau = expm(K * jnp.where(is_ss, tau, 1.0))
        geo = jnp.linalg.solve(eye - E_tau, eye)
        _, MT = _integral_block(K, b, T)
        after_vec = jnp.where(is_inf, MT, b)  # amount vector at the end of the input

        def at(ti):
            s = ti - time - lag
            sp = jnp.maximum(s, 0.0)
            during = is_inf & (s < T)
            _, Ms = _integral_block(K, b, jnp.clip(s, 0.0, T))
            single_after = expm(K * jnp.maximum(s - T, 0.0)) @ after_vec
            single = jnp.where(during, Ms, single_after)
            # steady state: the current dose (if still infusing) plus the geometric tail
            k1 = jnp.where(is_inf & (s < T), 1.0, 0.0)
            tail = expm(K * jnp.maximum(sp + k1 * tau - T, 0.0)) @ (geo @ after_vec)
            ss = jnp.where(during, Ms, 0.0) + tail
            return dose_amt * jnp.where(is_ss, ss, single)

        return jax.vmap(at)(t)  # [P, n]

    contrib = jax.vmap(one)(
        doses.time,
        doses.lag,
        doses.amount,
        doses.rate,
        doses.duration,
        doses.tau,
        doses.kind,
        doses.cidx,
    )  # fmt: skip  [D, P, n]
    mask = analytic.given_mask(doses, t, seq, segment)  # [D, P]
    const = doses.kind == analytic.SS_CONSTANT_INFUSION

    # A constant-infusion steady state (SS with AMT 0) is -K^{-1} b R, then free decay.
    def const_one(time, lag, rate, cidx):
        b = dose_vectors[cidx]
        a0 = -jnp.linalg.solve(K, b) * rate
        return jax.vmap(lambda ti: expm(K * jnp.maximum(ti - time - lag, 0.0)) @ a0)(t)

    const_contrib = jax.vmap(const_one)(doses.time, doses.lag, doses.rate, doses.cidx)
    contrib = jnp.where(const[:, None, None], const_contrib, contrib)
    return jnp.sum(jnp.where(mask[:, :, None], contrib, 0.0), axis=0)


@dataclass(frozen=True)
class LinearSystemModel:
    """A user-defined linear compartment model.

    Parameters
    ----------
    name : str
    compartments : sequence of str
        Compartment names; NONMEM numbers are their positions + 1.
    flows : mapping
        ``"src->dst"`` (or ``"src->"`` for elimination) → name of the first-order rate
        constant (1/h), e.g. ``{"central->peripheral": "k12", "central->": "k10"}``.
    outputs : mapping
        Endpoint → ``(compartment, volume parameter)``; the endpoint is ``1000·A/V`` (ng/mL
        with mg and L). A volume parameter of ``None`` outputs the amount (mg).
    dose_compartments : sequence of str
        Compartments that take doses (default: the first); ``CMT 0`` doses go to the first.

    Examples
    --------
    >>> m = LinearSystemModel(
    ...     "parent_metabolite", ["parent", "metabolite"],
    ...     {"parent->metabolite": "kf", "parent->": "k10", "metabolite->": "km"},
    ...     {"parent": ("parent", "v"), "metabolite": ("metabolite", "vm")})
    >>> sorted(m.parameters)
    ['k10', 'kf', 'km', 'v', 'vm']
    """

    name: str
    compartments: tuple[str, ...]
    flows: tuple[tuple[tuple[int, int | None], str], ...]
    outputs: tuple[tuple[str, str, str | None], ...]
    dose_compartments: tuple[str, ...] = ()

    def __init__(
        self,
        name: str,
        compartments: Sequence[str],
        flows: Mapping[str, str],
        outputs: Mapping[str, tuple[str, str | None]],
        dose_compartments: Sequence[str] = (),
    ):
        comps = tuple(compartments)
        if len(set(comps)) != len(comps) or not comps:
            raise ValueError(f"compartment names must be unique and non-empty: {comps}")
        index = {c: i for i, c in enumerate(comps)}
        parsed = []
        for key, pname in flows.items():
            if "->" not in key:
                raise ValueError(f"flow {key!r}: write 'src->dst' or 'src->' (elimination)")
            src, dst = (x.strip() for x in key.split("->", 1))
            for c in (src, dst):
                if c and c not in index:
                    raise ValueError(f"flow {key!r}: unknown compartment {c!r}; have {comps}")
            parsed.append(((index[src], index[dst] if dst else None), str(pname)))
        outs = []
        for ep, (cmt, vol) in outputs.items():
            if cmt not in index:
                raise ValueError(f"output {ep!r}: unknown compartment {cmt!r}; have {comps}")
            outs.append((ep, cmt, vol))
        doses = tuple(dose_compartments) or (comps[0],)
        for c in doses:
            if c not in index:
                raise ValueError(f"dose compartment {c!r} is not one of {comps}")
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "compartments", comps)
        object.__setattr__(self, "flows", tuple(parsed))
        object.__setattr__(self, "outputs", tuple(outs))
        object.__setattr__(self, "dose_compartments", doses)

    @property
    def parameters(self) -> dict[str, str]:
        out = {p: "1/h" for _, p in self.flows}
        out.update({v: "L" for _, _, v in self.outputs if v is not None})
        for c in self.dose_compartments:
            out.update({f"lag_{c}": "h", f"f_{c}": "1", f"dur_{c}": "h", f"rate_{c}": "mg/h"})
        return out

    @property
    def structural_parameters(self) -> tuple[str, ...]:
        return tuple(
            dict.fromkeys([p for _, p in self.flows] + [v for _, _, v in self.outputs if v])
        )

    @property
    def endpoints(self) -> dict[str, str]:
        return {ep: ("ng/mL" if v else "mg") for ep, _, v in self.outputs}

    def check_parameters(self, params: Mapping[str, object]) -> None:
        """Raise ``ValueError`` naming unknown or missing parameters."""
        unknown = sorted(set(params) - set(self.parameters))
        missing = [p for p in self.structural_parameters if p not in params]
        if unknown or missing:
            raise ValueError(
                f"model {self.name!r}: unknown {unknown or 'none'}, missing {missing or 'none'}; "
                f"its parameters: {', '.join(self.parameters)}"
            )

    def check_subject(self, subject) -> list[str]:
        cmt = np.asarray(subject.dose_cmt)
        mask = analytic.host_active_doses(subject)
        index = {c: i + 1 for i, c in enumerate(self.compartments)}
        allowed = [0] + [index[c] for c in self.dose_compartments]
        bad = sorted(set(cmt[mask & ~np.isin(cmt, allowed)].tolist()))
        return (
            [f"doses into compartment(s) {bad}; model {self.name!r} takes doses into {allowed[1:]}"]
            if bad
            else []
        )

    def matrix(self, params) -> jnp.ndarray:
        """The system matrix K (1/h)."""
        return _flow_matrix(len(self.compartments), self.flows, params)

    def amounts(self, params, subject) -> jnp.ndarray:
        """Amounts (mg) in every compartment at each prediction point, ``[P, n]``."""
        n = len(self.compartments)
        index = {c: i for i, c in enumerate(self.compartments)}
        modifiers = {}
        for k, c in enumerate(self.dose_compartments):
            modifiers[k] = {
                m: params[f"{m}_{c}"] for m in ("lag", "f", "dur", "rate") if f"{m}_{c}" in params
            }
        cmts = {index[c] + 1: k for k, c in enumerate(self.dose_compartments)}
        doses = analytic.dose_terms(subject, modifiers, cmts, default_compartment=0)
        vecs = jnp.asarray(np.eye(n)[[index[c] for c in self.dose_compartments]], dtype=float)
        return superpose_linear(
            self.matrix(params),
            vecs,
            doses,
            jnp.asarray(subject.point_time, dtype=float),
            jnp.asarray(subject.point_seq),
            jnp.asarray(subject.point_segment),
        )

    def predict(self, params, subject) -> dict[str, jnp.ndarray]:
        """Every output at each prediction point (ng/mL, or mg for amount outputs)."""
        a = self.amounts(params, subject)
        index = {c: i for i, c in enumerate(self.compartments)}
        out = {}
        for ep, cmt, vol in self.outputs:
            amt = a[:, index[cmt]]
            out[ep] = (
                amt if vol is None else CONC_SCALE * amt / jnp.asarray(params[vol], dtype=float)
            )
        return out


jax.tree_util.register_static(LinearSystemModel)
