r"""The quick fit (``method="map"``): population mode with subject effects integrated out.

The joint posterior mode over population values *and* subject effects is not a population
estimate: at the joint mode the subject effects are fitted, not integrated, so the
between-subject SDs come out wherever the subjects' fitted effects put them (on the
phenobarbital data: ω_CL 1.31 against NONMEM's 0.17) and the typical values follow. What
NONMEM's FOCE-I / Laplacian methods and the mode of the integrated posterior do instead is
maximise the *marginal* density of the population-level quantities :math:`\theta`
(typical values, between-subject and between-study SDs, study effects, covariate effects,
residual SDs; on NumPyro's unconstrained scale) with the subject effects :math:`z_i`
integrated out, by a Laplace approximation per subject:

.. math::
    -\log p(\theta \mid y) \approx F(\theta) = U(\theta, \hat z(\theta))
        + \tfrac12 \sum_i \log\det B_i(\theta) - \tfrac{Sk}{2}\log 2\pi + \mathrm{const},

with :math:`U` the model's potential energy (:func:`pkpd.inference.fit.build_model`,
non-centred: :math:`z_i \sim N(0, I)`), :math:`\hat z_i(\theta)` each subject's conditional
mode and :math:`B_i = \partial^2 U / \partial z_i^2` there (the exact Hessian, so Laplacian
rather than FOCE's first-order approximation of it). Subjects are independent given
:math:`\theta`, so the Hessian in :math:`z` is block diagonal: one Hessian-vector product
per subject-effect column, along that column for all subjects at once, gives every
:math:`B_i` (:func:`_grad_and_blocks`).

* Inner problem: damped Newton on every subject at once (eigenvalues of :math:`B_i` made
  positive; backtracking per subject on its own log joint density, which the model's trace
  gives: its subject-effect priors and its observations), warm-started from the previous
  outer evaluation's modes.
* Outer problem: L-BFGS (scipy) on :math:`F`. Its gradient is exact to first order in the
  inner residual: one Newton step :math:`z_1 = \hat z - B^{-1} \nabla_z U(\theta, \hat z)` from
  the converged (constant) :math:`\hat z` carries :math:`d\hat z/d\theta = -B^{-1}
  \partial^2 U/\partial z \partial\theta` (implicit function theorem) into
  :math:`U` and :math:`\log\det B` (third derivatives, by JAX).
* Covariance: :math:`\Sigma_\theta = H^{-1}` with :math:`H` the Hessian of :math:`F` at the
  mode (central differences of the compiled gradient), on the directions it identifies.
  Directions of curvature at most ``max(1e-7 max eig, 1e-4)`` (an SD of 100 or more on the
  unconstrained scale, or below what the differences resolve) are *flat*: reported by the
  parameters that load on them and held at the mode in the draws, not given an invented
  variance. Parameters whose Laplace variance is more than half of their prior's (the data
  carry less weight than the prior) are reported as prior-dominated.
* Draws: :math:`\theta_d \sim N(\hat\theta, \Sigma_\theta)`, and each subject's effects given
  :math:`\theta_d` from its Laplace Gaussian, :math:`z_i \mid \theta_d \sim N(\hat z_i -
  B_i^{-1} C_i (\theta_d - \hat\theta), B_i^{-1})` with :math:`C_i = \partial^2 U/\partial z_i
  \partial\theta` (the conditional mode moved to first order), so individual predictions
  follow each draw's population values. The draws fill the ``posterior`` group as NUTS's do.

Where it is, and is not, a substitute for NUTS: it targets the mode of the marginal posterior
of the population values (with weakly informative priors, close to a FOCE-I/Laplacian
estimate) and a Gaussian around it. It is a good first look and a good point estimate when
subjects are informative or numerous and the population values are well identified. It is
not one for intervals of poorly identified quantities (few studies' between-study SDs, a
between-subject SD near 0, skewed posteriors of SDs from few subjects), for multimodal or
strongly non-Gaussian posteriors, or for decisions that depend on tail probabilities: use
NUTS. The mode is on the unconstrained scale (e.g. of :math:`\log\omega`), whose Jacobian
shifts SDs estimated from few subjects slightly up relative to a mode in :math:`\omega`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from functools import partial

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

#: Default settings of the inner (per-subject) Newton iterations.
INNER_MAX_ITER = 50
INNER_TOL = 1e-12  # on half the squared Newton decrement, per subject
#: Relative and absolute curvature under which a direction of the outer Hessian is flat.
FLAT_RELATIVE = 1e-7
FLAT_ABSOLUTE = 1e-4
#: A parameter is prior-dominated where its Laplace variance exceeds this share of its prior's.
PRIOR_DOMINATED = 0.5


@dataclasses.dataclass
class MarginalMode:
    """Result of :func:`marginal_mode`.

    Attributes
    ----------
    theta : numpy.ndarray
        Population-level values at the mode, flat, unconstrained scale ``[m]``.
    z : numpy.ndarray
        Subjects' conditional modes given ``theta`` ``[S, k]`` (standardised effects).
    objective : float
        :math:`F(\\hat\\theta)` (minus the Laplace log marginal posterior density, up to a
        constant).
    converged : bool
        The outer optimiser's convergence and every subject's inner convergence.
    iterations : int
        Outer (L-BFGS) iterations.
    evaluations : int
        Outer objective evaluations.
    inner_decrement : float
        Largest half squared Newton decrement of a subject at the final point.
    labels : list of str
        Name of each coordinate of ``theta`` (site, with an index for vector sites).
    message : str
        The outer optimiser's message.
    """

    theta: np.ndarray
    z: np.ndarray
    objective: float
    converged: bool
    iterations: int
    evaluations: int
    inner_decrement: float
    labels: list[str]
    message: str = ""


class LaplaceProblem:
    """The Laplace-marginal objective of a non-centred pkpd model, compiled.

    Parameters
    ----------
    numpyro_model : callable
        From :func:`pkpd.inference.fit.build_model` with non-centred subject effects.
    obs : array
        The observations the model is conditioned on (``model(obs=obs)``).
    proto : dict
        Unconstrained values of every latent site (a start), giving shapes and names.
    obs_subject : array of int
        Subject index of each observation.
    population : sequence of str
        Latent sites outside the subject plate.
    n_subjects : int
    site_labels : dict, optional
        ``{site: [label of each element]}`` for vector population sites (e.g. the studies of
        ``z_study_<p>``).
    """

    def __init__(
        self,
        numpyro_model,
        obs,
        proto: dict,
        obs_subject,
        population: Sequence[str],
        n_subjects: int,
        site_labels: dict | None = None,
    ):
        self.model = numpyro_model
        self.obs = obs
        self.S = int(n_subjects)
        pop = set(population)
        self.pop_sites = sorted(k for k in proto if k in pop)
        self.subj_sites = sorted(k for k in proto if k not in pop)
        for k in self.subj_sites:
            shape = np.shape(proto[k])
            if not k.startswith("z_") or not shape or shape[0] != self.S:
                raise ValueError(
                    f"site {k} of shape {shape} is neither population-level nor a non-centred "
                    "subject effect; the Laplace-marginal fit needs a non-centred model"
                )
        self.theta0, self._unravel_pop = jax.flatten_util.ravel_pytree(
            {k: jnp.asarray(proto[k]) for k in self.pop_sites}
        )
        self.theta0 = np.asarray(self.theta0, dtype=float)
        # columns of the subject-effect matrix Z [S, k]: (site, width, the site's shape)
        self._cols = []
        for k in self.subj_sites:
            shape = np.shape(proto[k])
            self._cols.append((k, int(np.prod(shape[1:], dtype=int)), shape))
        self.k = sum(w for _, w, _ in self._cols)
        self.z0 = np.concatenate(
            [np.asarray(proto[k], dtype=float).reshape(self.S, -1) for k in self.subj_sites]
            or [np.zeros((self.S, 0))],
            axis=1,
        )
        self.m = self.theta0.size
        labels = []
        site_labels = site_labels or {}
        for k in self.pop_sites:
            n = int(np.size(proto[k]))
            if np.ndim(proto[k]) == 0:
                labels.append(k)
            else:
                names = site_labels.get(k) or [str(i) for i in range(n)]
                labels.extend(f"{k}[{names[i] if i < len(names) else i}]" for i in range(n))
        self.labels = labels
        self._obs_subject = jnp.asarray(obs_subject)
        self._compile()

    # -- the model's terms ---------------------------------------------------------------------
    def params(self, theta, Z) -> dict:
        """The unconstrained site values of ``(theta, Z)``."""
        out = dict(self._unravel_pop(theta))
        j = 0
        for name, width, shape in self._cols:
            out[name] = Z[:, j : j + width].reshape(shape)  # e.g. [S], [S, O], [S, O, k]
            j += width
        return out

    def terms(self, theta, Z):
        """``(U, u [S], prior)``: potential energy, each subject's share (minus the log
        density of its effects' prior and its observations; ``inf`` for every subject where
        the model cannot be evaluated), and the population-level prior part (priors and
        Jacobians of the population sites)."""
        from numpyro.handlers import substitute
        from numpyro.infer.util import _unconstrain_reparam, log_density

        model = substitute(
            self.model, substitute_fn=partial(_unconstrain_reparam, self.params(theta, Z))
        )
        log_joint, tr = log_density(model, (), {"obs": self.obs}, {})
        per = jnp.zeros(self.S)
        prior = 0.0
        factor = 0.0
        for name, site in tr.items():
            if site["type"] != "sample":
                continue
            lp = site["fn"].log_prob(site["value"])
            if name in self.subj_sites:  # [S] or [S, ...] (e.g. occasion effects [S, O])
                per = per + jnp.sum(lp.reshape(self.S, -1), axis=1)
            elif name == "y":
                per = per + jax.ops.segment_sum(lp, self._obs_subject, num_segments=self.S)
            elif name == "solver_ok":
                factor = jnp.sum(lp)
            else:  # population sites, their Jacobians ("_<site>_log_det"), other factors
                prior = prior + jnp.sum(lp)
        per = jnp.where(jnp.isfinite(factor), per + factor, -jnp.inf)
        return -log_joint, -per, -prior

    def potential(self, theta, Z):
        return self.terms(theta, Z)[0]

    def _grad_and_blocks(self, theta, Z):
        """Gradient in ``Z`` [S, k] and the subjects' Hessian blocks [S, k, k] (one
        Hessian-vector product per column, for all subjects at once)."""
        g, lin = jax.linearize(lambda z: jax.grad(self.potential, argnums=1)(theta, z), Z)
        eye = jnp.eye(self.k)
        cols = jax.vmap(lambda e: lin(jnp.broadcast_to(e, Z.shape)))(eye)  # [c, S, i]
        B = jnp.transpose(cols, (1, 2, 0))
        return g, 0.5 * (B + jnp.swapaxes(B, 1, 2))

    # -- compiled pieces -----------------------------------------------------------------------
    def _compile(self):
        S, k = self.S, self.k

        def subject_values(theta, Z):
            return self.terms(theta, Z)[1]

        def newton(theta, Z0, max_iter, tol):
            def direction(g, B):
                w, Q = jnp.linalg.eigh(B)
                w = jnp.maximum(jnp.abs(w), 1e-6)
                d = -jnp.einsum("sij,sj->si", Q, jnp.einsum("sji,sj->si", Q, g) / w)
                return d, -jnp.sum(g * d, axis=1)  # direction, squared Newton decrement

            def line_search(theta, Z, u, d, slope):
                def cond(st):
                    i, _, done, _, _ = st
                    return (i < 30) & ~jnp.all(done)

                def body(st):
                    i, alpha, done, Znew, unew = st
                    trial = jnp.where(done[:, None], Znew, Z + alpha[:, None] * d)
                    ut = subject_values(theta, trial)
                    # Armijo, with room for rounding once the decrease is below it
                    slack = 1e-10 * (1.0 + jnp.abs(u))
                    ok = jnp.isfinite(ut) & (ut <= u - 1e-4 * alpha * slope + slack)
                    take = ok & ~done
                    Znew = jnp.where(take[:, None], trial, Znew)
                    unew = jnp.where(take, ut, unew)
                    done = done | ok
                    return i + 1, jnp.where(done, alpha, 0.5 * alpha), done, Znew, unew

                st = (0, jnp.ones(S), slope <= 0.0, Z, u)
                _, _, _, Znew, unew = jax.lax.while_loop(cond, body, st)
                return Znew, unew

            def cond(st):
                it, _, _, _, _, dec, moved = st
                return (it < max_iter) & (jnp.max(dec) > tol) & moved

            def body(st):
                it, Z, u, g, B, _, _ = st
                d, dec2 = direction(g, B)
                Znew, u = line_search(theta, Z, u, d, dec2)
                g, B = self._grad_and_blocks(theta, Znew)
                moved = jnp.any(Znew != Z)
                return it + 1, Znew, u, g, B, 0.5 * direction(g, B)[1], moved

            u0 = subject_values(theta, Z0)
            g0, B0 = self._grad_and_blocks(theta, Z0)
            st = (0, Z0, u0, g0, B0, 0.5 * direction(g0, B0)[1], jnp.array(True))
            it, Z, u, g, B, dec, _ = jax.lax.while_loop(cond, body, st)
            return Z, B, jnp.max(dec), it

        def objective(theta, Zhat, B0):
            g = jax.grad(self.potential, argnums=1)(theta, Zhat)
            step = jnp.linalg.solve(B0, g[..., None])[..., 0]
            z1 = Zhat - step
            z1 = Zhat + (z1 - jax.lax.stop_gradient(z1))  # the value of Zhat, the slope of z1
            _, B = self._grad_and_blocks(theta, z1)
            L = jnp.linalg.cholesky(B)
            logdet = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)))
            return self.potential(theta, z1) + 0.5 * logdet - 0.5 * S * k * math.log(2 * math.pi)

        def plain(theta):
            return self.potential(theta, jnp.zeros((S, 0)))

        if k:
            self._newton = jax.jit(newton, static_argnums=(2,))
            self._objective = jax.jit(jax.value_and_grad(objective))
        else:
            self._newton = None
            self._objective = jax.jit(jax.value_and_grad(lambda t, z, b: plain(t)))
        self._prior_hessian = jax.jit(
            jax.hessian(lambda t, Z: self.terms(t, Z)[2]), static_argnums=()
        )
        self._cross = jax.jit(
            jax.jacfwd(lambda t, Z: jax.grad(self.potential, argnums=1)(t, Z), argnums=0)
        )

    # -- host-side API -------------------------------------------------------------------------
    def solve_subjects(self, theta, Z0, max_iter: int = INNER_MAX_ITER):
        """Conditional modes ``Z`` [S, k] given ``theta``, their Hessian blocks, the largest
        half squared Newton decrement and the iterations used."""
        theta = jnp.asarray(theta, dtype=float)
        if not self.k:
            return np.zeros((self.S, 0)), np.zeros((self.S, 0, 0)), 0.0, 0
        Z, B, dec, it = self._newton(theta, jnp.asarray(Z0, dtype=float), int(max_iter), INNER_TOL)
        return Z, B, float(dec), int(it)

    def value_and_grad(self, theta, Z0):
        """``(F, dF/dtheta, Z, decrement)`` at ``theta``, the subjects solved from ``Z0``."""
        Z, B, dec, _ = self.solve_subjects(theta, Z0)
        v, g = self._objective(jnp.asarray(theta, dtype=float), jnp.asarray(Z), jnp.asarray(B))
        return float(v), np.asarray(g, dtype=float), Z, dec

    def hessian(self, theta, Z, h: float = 1e-3):
        """Hessian of :math:`F` at ``theta``: central differences of the compiled gradient,
        the subjects re-solved (warm-started from ``Z``) at each point."""
        theta = np.asarray(theta, dtype=float)
        H = np.zeros((self.m, self.m))
        for j in range(self.m):
            e = np.zeros(self.m)
            e[j] = h
            gp = self.value_and_grad(theta + e, Z)[1]
            gm = self.value_and_grad(theta - e, Z)[1]
            H[:, j] = (gp - gm) / (2 * h)
        return 0.5 * (H + H.T)


def marginal_mode(problem: LaplaceProblem, theta0=None, z0=None, max_iter: int = 2000):
    """The mode of the Laplace-marginal posterior of the population-level values.

    L-BFGS (scipy) on :meth:`LaplaceProblem.value_and_grad`, each evaluation warm-starting the
    subjects' Newton iterations from the last finite evaluation's modes. Where the model cannot
    be evaluated the objective is huge (the line search backs off); the best point seen is
    returned, with its subjects' modes.

    Parameters
    ----------
    problem : LaplaceProblem
    theta0, z0 : array, optional
        Start (default: the problem's prototype values).
    max_iter : int
        Iteration limit of L-BFGS.

    Returns
    -------
    MarginalMode
    """
    from scipy.optimize import minimize

    theta0 = problem.theta0 if theta0 is None else np.asarray(theta0, dtype=float)
    z0 = problem.z0 if z0 is None else np.asarray(z0, dtype=float)
    huge = float(np.finfo(float).max) ** 0.5
    state = {"z": jnp.asarray(z0), "best": np.inf, "x": theta0.copy(), "zbest": z0, "n": 0}

    def fun(x):
        state["n"] += 1
        v, g, Z, _ = problem.value_and_grad(x, state["z"])
        if not (np.isfinite(v) and np.all(np.isfinite(g))):
            return huge, np.zeros_like(x)
        state["z"] = Z
        if v < state["best"]:
            state.update(best=v, x=np.array(x), zbest=Z)
        return v, g

    res = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": int(max_iter), "maxfun": 2 * int(max_iter), "gtol": 1e-6},
    )
    Z, _, dec, _ = problem.solve_subjects(state["x"], state["zbest"])
    return MarginalMode(
        theta=state["x"],
        z=np.asarray(Z),
        objective=float(state["best"]),
        converged=bool(res.success) and dec <= 1e-6,
        iterations=int(res.nit),
        evaluations=state["n"],
        inner_decrement=dec,
        labels=problem.labels,
        message=str(res.message),
    )


def population_covariance(problem: LaplaceProblem, mode: MarginalMode):
    """Laplace covariance of the population-level values at the marginal mode.

    Returns
    -------
    dict
        ``cov`` [m, m] (zero along flat directions), ``sd`` [m] (NaN where a parameter loads
        on a flat direction), ``flat_directions`` (count), ``flat_parameters`` (labels with a
        squared loading of at least 0.1 on a flat direction), ``prior_dominated`` (labels
        whose Laplace variance exceeds :data:`PRIOR_DOMINATED` of their prior's, judged by
        the prior's curvature at the mode), ``hessian``.
    """
    H = problem.hessian(mode.theta, mode.z)
    w, Q = np.linalg.eigh(H)
    scale = float(np.max(np.abs(w))) if w.size else 0.0
    flat = ~np.isfinite(w) | (w <= max(FLAT_RELATIVE * scale, FLAT_ABSOLUTE))
    keep = ~flat
    cov = (Q[:, keep] / w[keep]) @ Q[:, keep].T
    loading = (Q[:, flat] ** 2).max(axis=1) if flat.any() else np.zeros(problem.m)
    flat_params = [lab for lab, q in zip(problem.labels, loading, strict=True) if q >= 0.1]
    sd = np.sqrt(np.maximum(np.diag(cov), 0.0))
    sd[loading >= 0.1] = np.nan
    H0 = np.asarray(problem._prior_hessian(jnp.asarray(mode.theta), jnp.asarray(mode.z)))
    prior_dom = []
    for j, lab in enumerate(problem.labels):
        c0 = H0[j, j]
        if lab in flat_params or (c0 > 0 and cov[j, j] * c0 > PRIOR_DOMINATED):
            prior_dom.append(lab)
    return {
        "cov": cov,
        "sd": sd,
        "flat_directions": int(flat.sum()),
        "flat_parameters": flat_params,
        "prior_dominated": prior_dom,
        "hessian": H,
        "eigenvalues": w,
    }


def draws(problem: LaplaceProblem, mode: MarginalMode, cov: np.ndarray, key, n: int):
    """Unconstrained draws of every latent site: population values from
    :math:`N(\\hat\\theta, \\Sigma)`, each subject's effects from its Laplace Gaussian given
    the draw (module docstring). Returns a dict of arrays with a leading ``[n]``."""
    k_t, k_z = jax.random.split(key)
    theta = jnp.asarray(mode.theta)
    w, Q = np.linalg.eigh(0.5 * (cov + cov.T))
    root = jnp.asarray(Q * np.sqrt(np.maximum(w, 0.0)))
    dtheta = jax.random.normal(k_t, (n, problem.m)) @ root.T
    if problem.k:
        Z, B, _, _ = problem.solve_subjects(theta, mode.z)
        C = problem._cross(theta, Z)  # [S, k, m]
        L = jnp.linalg.cholesky(B)
        shift = -jnp.linalg.solve(B, jnp.einsum("skm,nm->snk", C, dtheta).transpose(0, 2, 1))
        shift = jnp.transpose(shift, (2, 0, 1))  # [n, S, k]
        eps = jax.random.normal(k_z, (n, problem.S, problem.k))
        # z = mean + L^{-T} eps: covariance B^{-1}
        noise = jax.vmap(
            lambda e: jax.scipy.linalg.solve_triangular(
                jnp.swapaxes(L, 1, 2), e[..., None], lower=False
            )[..., 0]
        )(eps)
        zs = Z[None] + shift + noise
    else:
        zs = jnp.zeros((n, problem.S, 0))
    return jax.vmap(problem.params)(theta[None] + dtheta, zs)


def laplace_marginal_fit(spec, numpyro_model, obs, x_start, unravel, key, n_draws, max_iter):
    """``method="map"`` of :func:`pkpd.inference.fit.fit`: the marginal mode, its covariance
    and draws (module docstring).

    Parameters
    ----------
    spec : FitSpec
    numpyro_model : callable
        The non-centred model of ``spec``.
    obs : array
    x_start : array
        A valid start, flat unconstrained (every latent site).
    unravel : callable
        Flat vector to the dict of unconstrained site values.
    key : jax.random.PRNGKey
        For the draws.
    n_draws, max_iter : int
        Draws, and the outer optimiser's iteration limit.

    Returns
    -------
    samples : dict
        Constrained values of every latent site ``[1, n_draws, ...]`` (one chain).
    attrs : dict
        What was done, for the fit's attributes (``map_kind``, convergence, iterations, the
        flat and prior-dominated directions, the Laplace SDs, timings).
    log_density : float
        Minus :math:`F` at the mode (the Laplace log marginal posterior density, up to a
        constant).
    """
    from numpyro.infer.util import constrain_fn

    from pkpd.inference.fit import _population_sites

    t0 = time.perf_counter()
    proto = unravel(jnp.asarray(x_start))
    studies = spec.study_names
    labels = {k: studies for k in proto if k.startswith("z_study_")}
    problem = LaplaceProblem(
        numpyro_model,
        obs,
        proto,
        spec.obs_subject,
        _population_sites(numpyro_model, obs),
        spec.n_subjects,
        labels,
    )
    mode = marginal_mode(problem, max_iter=max_iter)
    t1 = time.perf_counter()
    cov = population_covariance(problem, mode)
    t2 = time.perf_counter()
    unc = draws(problem, mode, cov["cov"], key, n_draws)
    cons = jax.jit(jax.vmap(lambda u: constrain_fn(numpyro_model, (), {"obs": obs}, u)))(unc)
    samples = jax.tree.map(lambda x: np.asarray(x)[None], cons)
    attrs = {
        "map_kind": "laplace_marginal",
        "map_converged": int(mode.converged),
        "map_iterations": mode.iterations,
        "map_evaluations": mode.evaluations,
        "map_message": mode.message,
        "map_inner_decrement": mode.inner_decrement,
        "laplace_flat_directions": cov["flat_directions"],
        "laplace_flat_parameters": cov["flat_parameters"],
        "laplace_prior_dominated": cov["prior_dominated"],
        # SD of each population-level value on the unconstrained scale (log for positive
        # values); null where it loads on a flat direction
        "laplace_sd": {
            lab: (None if not np.isfinite(s) else float(s))
            for lab, s in zip(problem.labels, cov["sd"], strict=True)
        },
        "map_timing_s": {
            "mode": round(t1 - t0, 3),
            "covariance": round(t2 - t1, 3),
            "draws": round(time.perf_counter() - t2, 3),
        },
    }
    return samples, attrs, -mode.objective
