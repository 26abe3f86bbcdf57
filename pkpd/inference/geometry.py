"""Where NUTS starts and how it sees the posterior: jittered starts, the initial mass
matrix, per-subject centring, levelled IC50s, anchored study means, and the check of
``auto``'s centring by its chains."""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np

from pkpd.inference.hierarchy import to_unconstrained
from pkpd.inference.model import _level_frame, _normal_on_transform
from pkpd.inference.spec import FitError

#: Divergent transitions, as a fraction of the draws, above which a fit whose ``auto``
#: parameterisation centred some subject effects is rerun with every subject effect
#: non-centred (:func:`_fallback_centered`).
FALLBACK_DIVERGENCE_FRACTION = 0.01

#: Fewer warmup iterations than this and divergences say nothing about the geometry (the step
#: size is not adapted yet): no rerun.
FALLBACK_MIN_WARMUP = 100

#: How far below the mean of all draws (in posterior SDs of log ω) the divergent draws' mean
#: log ω of a centred parameter must sit to blame its centring.
FALLBACK_FUNNEL_SD = 0.5


def _fallback_centered(spec, samples, extra, warmup: int) -> list[str] | None:
    """Whether ``auto``'s centring is to be checked by a non-centred rerun.

    ``auto`` centres a subject's effect where the curvature at the MAP says the data pin it
    (:func:`_choose_centered`); that is a local judgement, and the centred form funnels where it
    is wrong: divergent transitions where that parameter's ω is small. The chains themselves
    are the check: if more than :data:`FALLBACK_DIVERGENCE_FRACTION` of the draws diverged and
    the divergent draws sit at small ω of a centred parameter (their mean log ω at least
    :data:`FALLBACK_FUNNEL_SD` posterior SDs below the mean of all draws: the funnel's
    signature), the fit is run again with every subject effect non-centred (same key, start,
    levels and anchors) and the run with fewer divergences is kept; both counts are stored
    (``attrs["parameterization_check"]``). Divergences elsewhere (a non-centred PD parameter,
    a curved ridge) are not the centring's doing and get no rerun. A fit that centred nothing,
    or did not diverge, costs nothing more; one with fewer than :data:`FALLBACK_MIN_WARMUP`
    warmup iterations is not checked. Returns the centred parameters whose funnel the
    divergences show, or ``None``.
    """
    if spec.parameterization != "auto" or not spec.centered or warmup < FALLBACK_MIN_WARMUP:
        return None
    div = np.asarray(extra["diverging"]).reshape(-1).astype(bool)
    if not div.sum() > FALLBACK_DIVERGENCE_FRACTION * div.size:
        return None
    funnels = []
    for p in spec.centered:
        name = f"omega_{p}"
        if name not in samples:
            continue
        log_om = np.log(np.asarray(samples[name]).reshape(-1))
        sd = log_om.std()
        if sd > 0 and (log_om[div].mean() - log_om.mean()) / sd <= -FALLBACK_FUNNEL_SD:
            funnels.append(p)
    return funnels or None


def _jittered_starts(objective, u0, key, chains, scale=0.05):
    """One start per chain: the MAP point plus N(0, scale²) noise on the unconstrained scale.

    Chains started apart show whether they agree (R-hat); a jittered start whose log density
    or gradient is not finite (e.g. a solver failing there) is pulled back toward the MAP,
    halving the noise until it is (the MAP itself, at worst).
    """
    flat0 = np.asarray(jax.flatten_util.ravel_pytree(u0)[0])
    starts = []
    for k in jax.random.split(key, chains):
        noise = np.asarray(jax.random.normal(k, flat0.shape))
        s = scale
        for _ in range(8):
            x = flat0 + s * noise
            if objective.usable(x):
                break
            s /= 2
        else:
            x = flat0
            if not objective.usable(x):
                raise FitError(
                    "the MAP start has a non-finite log density or gradient and no point near "
                    "it is better; check the priors and data (or try method='map' to inspect "
                    "the mode)"
                )
        starts.append(objective.unravel(jnp.asarray(x)))
    return jax.tree.map(lambda *xs: jnp.stack(xs), *starts)


def _centered_start(spec, nm, nm_start, obs, u_start):
    """The unconstrained start of the chain model (partly centred, levelled: ``spec.centered``,
    ``spec.levels``) at the non-centred MAP point (compiled: the two model passes run eagerly
    are slow)."""
    from numpyro.infer.util import constrain_fn, unconstrain_fn

    pri = spec.priors
    centered = set(spec.centered)
    corr_centered = bool(spec.correlated) and set(spec.correlated) <= centered

    def convert(u):
        vals = constrain_fn(nm_start, (), {"obs": obs}, u, return_deterministic=True)
        init = {k: v for k, v in vals.items() if k in u}
        zc = {
            p: to_unconstrained(
                vals[f"theta_{p}"] / pri.parameters[p].multiplier, pri.parameters[p].transform
            )
            for p in centered
        }
        for p, idx in spec.anchors.items():
            pp = pri.parameters[p]
            t = to_unconstrained(
                init.pop(f"pop_{p}", vals[f"pop_{p}"]) / pp.multiplier, pp.transform
            )
            init.pop(f"pop_{p}_fraction", None)
            init[f"pop_{p}_anchor"] = t + jnp.mean(vals[f"eta_study_{p}"][jnp.asarray(idx)])
        for p, level in spec.levels.items():
            h, k = _level_frame(level, lambda q: vals[f"pop_{q}"])
            init[f"pop_{p}_level"] = h * (k - jnp.log(init.pop(f"pop_{p}")))
            if p in zc:
                zc[p] = h * (k - zc[p])
        if corr_centered:
            init.pop("z_corr")
            init["zc_corr"] = jnp.stack([zc[p] for p in spec.correlated], -1)
        for p, v in zc.items():
            if p not in spec.correlated:
                z = init.pop(f"z_{p}")
                init[f"zc_{p}"] = jnp.where(jnp.asarray(spec.centered_mask(p)), v, z)
        return unconstrain_fn(nm, (), {"obs": obs}, init)

    return jax.jit(convert)(u_start)


def _choose_centered(spec, objective, flat_map):
    r"""Which subjects' effects the data inform well enough to sample centred, per parameter.

    At the non-centred MAP, the Hessian of the potential in one subject's standardised effects
    :math:`z_i` (one per parameter with between-subject variability) is the identity from their
    N(0, 1) priors plus what the subject's data add; its inverse approximates their posterior
    covariance. Subjects are independent given the population values, so one Hessian-vector
    product per parameter (along that parameter's :math:`z` of all subjects at once, here a
    central difference of the compiled gradient) gives every subject's block. Where the data
    dominate (posterior variance of :math:`z_{p,i}` at most 0.5: the data carry at least the
    prior's weight) the centred form samples better; where the prior dominates, the non-centred
    one (Betancourt & Girolami 2015, "Hamiltonian Monte Carlo for hierarchical models";
    Gorinova et al. 2020, "Automatic reparameterisation of probabilistic programs"). The choice
    is made subject by subject: in a multi-study fit an endpoint measured in one study informs
    its parameters there and nowhere else (on the bundled temsirolimus data VEGF's 141 subjects
    of 365), and either form for everyone leaves a funnel on one side. Marginal, not
    conditional, variances: one late sample pins down a combination of CL and V, not V.
    A correlated block is centred, for every subject, when the mean variance of each of its
    parameters qualifies.

    Study effects stay non-centred: two or three studies per parameter are too few for the
    centred form's funnel (centring them where a study's subjects pin its mean was tried and
    gave far more divergences: benchmarks/RESULTS.md).

    Returns ``(parameters, subjects)``: the parameters centred for at least one subject, and
    for those centred for some subjects only, a bool array over subjects.
    """
    pri = spec.priors
    u = objective.unravel(jnp.asarray(flat_map))
    x = np.asarray(flat_map)
    # (site, column) of each parameter's standardised subject effects
    where = {p: ("z_corr", k) for k, p in enumerate(spec.correlated)}
    for p in spec.estimated:
        if pri.parameters[p].bsv is not None and p not in where:
            where[p] = (f"z_{p}", None)
    names = list(where)
    # parameters with inter-occasion variability stay non-centred (values per occasion)
    skip = set(spec.iov)

    def column(tree, p):
        site, k = where[p]
        a = np.asarray(tree[site])
        return a if k is None else a[:, k]

    cols = []
    for p in names:
        site, k = where[p]
        v = jax.tree.map(jnp.zeros_like, u)
        v[site] = jnp.ones_like(u[site]) if k is None else v[site].at[:, k].set(1.0)
        flat_v = np.asarray(jax.flatten_util.ravel_pytree(v)[0])
        hv = objective.hvp(x, flat_v)
        tree = objective.unravel(jnp.asarray(hv))
        cols.append(np.stack([column(tree, q) for q in names], axis=-1))  # [S, k]
    H = np.stack(cols, axis=-1)  # [S, k, k]: H[i, q, p]
    H = 0.5 * (H + np.swapaxes(H, 1, 2))
    var = np.ones((H.shape[0], len(names)))
    for i in range(H.shape[0]):
        try:
            c = np.linalg.inv(np.linalg.cholesky(H[i]))
            var[i] = np.minimum(np.sum(c * c, axis=0), 1.0)  # diag of H^-1 = diag(L^-T L^-1)
        except np.linalg.LinAlgError:
            pass  # not positive definite at the MAP: count the subject as uninformed
    chosen, subjects = [], {}
    if (
        spec.correlated
        and not skip & set(spec.correlated)
        and all(float(np.mean(var[:, names.index(p)])) <= 0.5 for p in spec.correlated)
    ):
        chosen += list(spec.correlated)
    for j, p in enumerate(names):
        rich = var[:, j] <= 0.5
        if p in spec.correlated or p in skip or not rich.any():
            continue
        chosen.append(p)
        if not rich.all():
            subjects[p] = rich
    return tuple(chosen), subjects


def _choose_anchors(spec) -> dict[str, tuple[int, ...]]:
    r"""Parameters with between-study effects, and the studies whose data inform each.

    The data pin the value of each study :math:`s` with data on the endpoints a parameter acts
    on, :math:`a_s = T(\theta_{pop}) + \omega^{study} z_s`, and the population value only
    through the prior on the :math:`z_s`: :math:`T(\theta_{pop}) = \bar a - \omega^{study}
    \bar z`, as uncertain as few studies make it, a curved ridge in
    :math:`(T(\theta_{pop}), \log\omega^{study}, z)` whose tails NUTS diverged in (4 × 500
    fits of the bundled temsirolimus data: at pop_pd1_base −6 posterior SDs, PD-1 measured in
    one study; at pop_cl_sir +5 SD, 4 studies; at pop_vegf_base +6 SD, 2 studies). NUTS then
    samples :math:`\bar a = T(\theta_{pop}) + \omega^{study} \bar z` (means over those
    studies) in place of :math:`T(\theta_{pop})` (:func:`build_model`): a shift given the
    others, so the same posterior. Used where the population prior is normal on the
    transformed scale (:func:`_normal_on_transform`) and the parameter is not levelled.
    Returns ``{parameter: (study index, ...)}``.
    """
    if spec.n_studies < 2:
        return {}
    model, pri = spec.model, spec.priors
    study_of = np.asarray(spec.padded.data.study)[np.asarray(spec.obs_subject)]
    informs: dict[str, set] = {}
    for e_i, e in enumerate(spec.endpoints):
        studies = set(study_of[np.asarray(spec.obs_endpoint) == e_i].tolist())
        if not studies:
            continue
        acts = set(model.with_endpoints((e,)).parameters)
        for p in acts:
            informs.setdefault(p, set()).update(studies)
    out = {}
    for p in spec.estimated:
        pp = pri.parameters[p]
        where = informs.get(p, set())
        if (
            pp.bsv_study is not None
            and where
            and p not in spec.levels
            and _normal_on_transform(pp) is not None
        ):
            out[p] = tuple(sorted(int(i) for i in where))
    return out


def _flat_index(u) -> dict[str, np.ndarray]:
    """Each site's positions in the flat vector of ``u`` (a dict of arrays, flattened by
    ``ravel_pytree`` in the order of its sorted keys), shaped like the site."""
    out, offset = {}, 0
    for name in sorted(u):
        shape = np.shape(u[name])
        n = int(np.prod(shape))
        out[name] = offset + np.arange(n).reshape(shape)
        offset += n
    return out


def _choose_levels(spec, objective, flat_map, population: Sequence[str], pairs: dict | None = None):
    r"""The IC50s to sample through their Hill-scaled level, and each one's reference.

    A Hill response depends on :math:`(C/\mathrm{IC50})^h`. Where the data sit mostly on one
    side of the IC50 (S6K inhibition near Imax on the bundled temsirolimus data) they pin the
    level :math:`\ell = h\,(\log C^* - \log \mathrm{IC50})` at the observed concentrations
    :math:`C^*`, not IC50 and :math:`h` apart: the posterior is a curved ridge
    :math:`\log \mathrm{IC50} = \log C^* - \ell/h`, which no linear metric straightens. NUTS
    then samples :math:`\ell = h\,(\log C_{ref} + \log s - \log \mathrm{IC50})` instead of
    :math:`\log \mathrm{IC50}` (population value and centred subject values; :math:`s` the
    model's scale of the concentration, e.g. temsirolimus's sirolimus ``potency``), an exact
    change of variables: the lognormal prior becomes a normal prior on :math:`\ell`
    (:func:`build_model`), the posterior is the same. The reference
    :math:`C_{ref}` makes :math:`\ell` uncorrelated with :math:`\log h` under the Laplace
    approximation at the (non-centred) MAP: with :math:`a = \log h`, :math:`\phi = \log
    \mathrm{IC50}`, :math:`\psi = \log s`,
    :math:`\log C_{ref} = \phi - \psi + (\Sigma_{\phi a} - \Sigma_{\psi a})/\Sigma_{aa}`.

    Pairs come from the model (``hill_levels = {ic50: (hill, scale)}``) unless ``pairs`` are
    given; a pair is used when
    the IC50 has a lognormal prior on the log scale (no multiplier, no correlation block) and
    the Hill exponent (and scale) are estimated on the log scale. Returns
    ``{ic50: (hill, scale or None, log C_ref)}``; empty when no pair qualifies or the
    curvature at the MAP is not usable.
    """
    pri = spec.priors
    est = set(spec.estimated)

    def log_scaled(q):
        pq = pri.parameters.get(q)
        return q in est and pq.transform == "log" and pq.multiplier == 1.0

    if pairs is None:
        pairs = dict(spec.model.hill_levels)
    usable = {}
    for p, (hill, scale) in pairs.items():
        if (
            log_scaled(p)
            and log_scaled(hill)
            and pri.parameters[p].prior.family == "lognormal"
            and p not in spec.correlated
        ):
            usable[p] = (hill, scale if scale is not None and log_scaled(scale) else None)
    if not usable:
        return {}
    laplace = _laplace_covariance(objective, flat_map, population, spec.n_subjects)
    if laplace is None:
        return {}
    _, pop_idx, sigma = laplace
    x = np.asarray(flat_map, dtype=float)
    where = {name: int(idx.flat[0]) for name, idx in _flat_index(objective.unravel(x)).items()}
    row = {int(g): j for j, g in enumerate(pop_idx)}
    out = {}
    for p, (hill, scale) in usable.items():
        a, f = row[where[f"pop_{hill}"]], row[where[f"pop_{p}"]]
        log_ref = x[where[f"pop_{p}"]] + sigma[f, a] / sigma[a, a]
        if scale is not None:
            s = row[where[f"pop_{scale}"]]
            log_ref -= x[where[f"pop_{scale}"]] + sigma[s, a] / sigma[a, a]
        if np.isfinite(log_ref):
            out[p] = (hill, scale, float(log_ref))
    return out


def _laplace_covariance(objective, flat, population: Sequence[str], n_subjects: int):
    r"""The Laplace approximation's covariance at ``flat``: marginal variances of every
    unconstrained coordinate, and the population block, for NUTS's initial mass matrix.

    The Hessian of a hierarchical potential is an arrow: subjects are independent given the
    population-level values, so it has one small block :math:`B_i` per subject (its effects on
    every parameter), population columns :math:`C_i` coupling them to the population values,
    and the population block :math:`H_{PP}`. One Hessian-vector product (a central difference
    of the compiled gradient) per population coordinate gives :math:`H_{PP}` and every
    :math:`C_i`; one per column of the subject sites (along that column for all subjects at
    once) gives every :math:`B_i`. Then, by the Schur complement,
    :math:`\Sigma_{PP} = (H_{PP} - \sum_i C_i^T B_i^{-1} C_i)^{-1}` and each subject
    coordinate's variance is :math:`\mathrm{diag}(B_i^{-1}) +
    \mathrm{diag}(B_i^{-1} C_i \Sigma_{PP} C_i^T B_i^{-1})`: about 80 gradients on the
    365-subject temsirolimus fit instead of 3,346 for the full Hessian.

    The point need not be a mode (the centred chain start is the non-centred MAP): curvatures
    are symmetrised and their eigenvalues floored at 0.01 (an SD of at most 10 on the
    unconstrained scale). NUTS's default (the identity) spent about 550 leapfrog steps per
    iteration in the first 100 warmup iterations of the full temsirolimus fit, against 200
    from the conditional variances :math:`1/H_{jj}`.

    Returns ``(variances [N], population_index [m], population_covariance [m, m])`` in the
    order of the flat vector, or ``None`` where the gradient is not finite near the point.
    """
    x = np.asarray(flat, dtype=float)
    u = objective.unravel(jnp.asarray(x))

    def hvp(v):
        out = objective.hvp(x, v)
        if not np.all(np.isfinite(out)):
            raise FloatingPointError
        return out

    def floor_inv(a):
        w, q = np.linalg.eigh(0.5 * (a + np.swapaxes(a, -1, -2)))
        w = np.maximum(w, 1e-2)
        return (q / w[..., None, :]) @ np.swapaxes(q, -1, -2)

    pop_idx, subj_cols = [], []  # subj_cols: [S] flat indices of one column of a subject site
    for name, idx in _flat_index(u).items():
        if name in population:
            pop_idx.extend(idx.ravel().tolist())
        else:
            cols = idx.reshape(n_subjects, -1)
            subj_cols.extend(cols[:, c] for c in range(cols.shape[1]))
    pop_idx = np.asarray(pop_idx, dtype=int)
    S, k, m = n_subjects, len(subj_cols), len(pop_idx)
    cols = np.stack(subj_cols, axis=-1) if k else np.zeros((S, 0), dtype=int)  # [S, k]
    H_pp = np.zeros((m, m))
    C = np.zeros((S, k, m))
    B = np.zeros((S, k, k))
    try:
        for j, g in enumerate(pop_idx):
            v = np.zeros_like(x)
            v[g] = 1.0
            col = hvp(v)
            H_pp[:, j] = col[pop_idx]
            C[:, :, j] = col[cols]
        for c in range(k):
            v = np.zeros_like(x)
            v[cols[:, c]] = 1.0
            B[:, :, c] = hvp(v)[cols]
    except FloatingPointError:
        return None
    B_inv = floor_inv(B) if k else B
    BC = B_inv @ C  # [S, k, m]
    schur = H_pp - np.einsum("skm,skn->mn", C, BC)
    sigma_pp = floor_inv(schur)
    var = np.ones_like(x)
    var[pop_idx] = np.diag(sigma_pp)
    if k:
        extra = np.einsum("skm,mn,skn->sk", BC, sigma_pp, BC)
        var[cols] = np.diagonal(B_inv, axis1=1, axis2=2) + extra
    return var, pop_idx, sigma_pp
