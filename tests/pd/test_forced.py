"""The affine recurrence behind the forced-turnover grid solver (pkpd.pd.forced)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pkpd.pd import forced
from pkpd.pd.forced import solve_affine


@pytest.mark.parametrize("method", [None, "sequential", "associative"])
def test_solve_affine_matches_a_plain_loop(method):
    rng = np.random.default_rng(3)
    A = rng.uniform(0.2, 1.0, (57, 3))
    B = rng.normal(size=(57, 3))
    y0 = rng.normal(size=3)
    ref = [y0]
    for k in range(57):
        ref.append(A[k] * ref[-1] + B[k])
    got = solve_affine(jnp.asarray(y0), jnp.asarray(A), jnp.asarray(B), method=method)
    np.testing.assert_allclose(np.asarray(got), np.stack(ref), rtol=1e-12, atol=1e-12)
    # gradients through either form
    g = jax.grad(lambda a: jnp.sum(solve_affine(jnp.asarray(y0), a, jnp.asarray(B), method)))
    # d/dA_k of sum_j y_j by a central difference of the loop
    k, eps = 11, 1e-6
    Ap, Am = A.copy(), A.copy()
    Ap[k, 1] += eps
    Am[k, 1] -= eps

    def total(a):
        y, s = y0.copy(), y0.sum()
        for j in range(57):
            y = a[j] * y + B[j]
            s += y.sum()
        return s

    fd = (total(Ap) - total(Am)) / (2 * eps)
    np.testing.assert_allclose(float(g(jnp.asarray(A))[k, 1]), fd, rtol=1e-7)
    # batched over subjects, as a fit vmaps it
    batched = jax.vmap(lambda a, b: solve_affine(jnp.asarray(y0), a, b, method))(
        jnp.stack([A, A[::-1]]), jnp.stack([B, B[::-1]])
    )
    np.testing.assert_allclose(np.asarray(batched[0]), np.stack(ref), rtol=1e-12, atol=1e-12)


def test_solve_affine_rejects_an_unknown_method():
    with pytest.raises(ValueError, match="sequential"):
        solve_affine(jnp.zeros(1), jnp.ones((2, 1)), jnp.ones((2, 1)), method="parallel")


def test_dose_grid_holds_every_dose_and_evaluation_time():
    # three 30-min infusions a week apart, the last one past the last evaluation time
    start = jnp.array([0.0, 168.0, 400.0])
    end = start + 0.5
    t_eval = jnp.array([0.25, 24.0, 170.0, 336.0])
    nodes, index, start_index = forced.dose_grid(start, end, jnp.array([True, True, True]), t_eval)
    nodes = np.asarray(nodes)
    per_dose = 1 + len(forced.START_OFFSETS) + len(forced.INFUSION_FRACTIONS)
    per_dose += 1 + len(forced.DEFAULT_OFFSETS)
    # the size the accuracy (tests/models/test_temsirolimus_model.py) and the cost
    # (benchmarks/RESULTS.md) were measured with: 11 nodes a dose, 32 uniform ones
    assert per_dose == 11
    assert nodes.shape == (32 + 3 * per_dose + 4,)
    assert np.all(np.diff(nodes) >= 0) and nodes[0] == 0.0 and nodes[-1] == 336.0
    np.testing.assert_array_equal(nodes[np.asarray(index)], np.asarray(t_eval))
    np.testing.assert_array_equal(nodes[np.asarray(start_index)[:2]], [0.0, 168.0])
    for t in (0.5, 168.5, 168.5 + 72.0):  # infusion ends and the offsets after them
        assert np.any(nodes == t)
    # no step longer than the uniform spacing
    assert np.diff(nodes).max() <= 336.0 / 31 + 1e-12
    # a bolus (or an oral dose) puts the slots of an infusion's start nodes just after it
    bolus, _, _ = forced.dose_grid(jnp.array([0.0, 24.0]), jnp.array([0.0, 24.0]),
                                   jnp.array([True, True]), t_eval)  # fmt: skip
    assert bolus.shape == (32 + 2 * per_dose + 4,)
    for t in forced.BOLUS_OFFSETS:
        assert np.any(np.isclose(np.asarray(bolus), 24.0 + t, rtol=0, atol=1e-12))
