"""pkpd's XLA flags: added in a fresh process, left alone when asked or when unsafe."""

from __future__ import annotations

import os
import subprocess
import sys

import jaxlib

from pkpd import _xla

CHECKED = tuple(int(x) for x in jaxlib.__version__.split(".")[:2]) in _xla.CHECKED_JAXLIB


def _flags_after_import(env_extra: dict) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("XLA_FLAGS", "PKPD_XLA_DEFAULTS")}
    env.update(env_extra)
    code = "import os, pkpd, jax.numpy as jnp; jnp.ones(1).sum(); print(os.environ.get('XLA_FLAGS', ''))"
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    return out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""


def test_fresh_process_gets_the_flag_and_keeps_the_users():
    got = _flags_after_import({"XLA_FLAGS": "--xla_force_host_platform_device_count=3"})
    assert got.startswith("--xla_force_host_platform_device_count=3")
    assert (_xla.YNN_FLAG in got) == CHECKED


def test_opt_out_and_a_users_own_setting_are_respected():
    assert _xla.YNN_FLAG not in _flags_after_import({"PKPD_XLA_DEFAULTS": "off"})
    mine = "--xla_cpu_experimental_ynn_fusion_type=reduce"
    assert _flags_after_import({"XLA_FLAGS": mine}) == mine


def test_nothing_is_added_once_the_backend_runs(monkeypatch):
    import jax.numpy as jnp

    jnp.ones(1).block_until_ready()  # the backend is up in this process
    monkeypatch.delenv("XLA_FLAGS", raising=False)
    monkeypatch.delenv("PKPD_XLA_DEFAULTS", raising=False)
    assert _xla.apply_cpu_defaults() is False
    assert "XLA_FLAGS" not in os.environ
