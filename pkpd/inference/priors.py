"""Priors from TOML files: every parameter's prior, unit, variability and source.

The schema is documented in ``priors/README.md``. :func:`load_priors` checks a file against it
(and against a model's parameters when one is given) and raises one :class:`PriorsError` that
names the file, the entry and the fix for every mistake.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Distribution families and their parameters. Scales must be > 0.
FAMILIES: dict[str, tuple[str, ...]] = {
    "normal": ("mean", "sd"),
    "lognormal": ("median", "sd_log"),
    "halfnormal": ("scale",),
    "halfcauchy": ("scale",),
    "exponential": ("rate",),
    "beta": ("a", "b"),
    "logitnormal": ("median", "sd_logit"),
    "uniform": ("low", "high"),
    "fixed": ("value",),
}
_POSITIVE = {"sd", "sd_log", "scale", "rate", "a", "b", "sd_logit"}
#: Families whose support is (0, inf), (0, 1)-like, or the real line.
_SUPPORT = {
    "normal": "real",
    "lognormal": "positive",
    "halfnormal": "positive",
    "halfcauchy": "positive",
    "exponential": "positive",
    "beta": "unit",
    "logitnormal": "unit",
    "uniform": "interval",
    "fixed": "point",
}
#: Parameter transforms: how a parameter and its random effects are put on the real line.
TRANSFORMS = ("log", "logit", "identity")
RESIDUAL_MODELS = {
    "additive": ("additive",),
    "proportional": ("proportional",),
    "combined": ("proportional", "additive"),
    "lognormal": ("sd_log",),
    "logit": ("sd_logit",),
}
COVARIATE_FORMS = ("power", "linear", "exponential", "categorical")


class PriorsError(ValueError):
    """Every mistake in a priors file, each with its entry and how to fix it."""

    def __init__(self, problems: list[str], source: str | None):
        self.problems = problems
        self.source = source
        n = len(problems)
        head = f"{n} problem{'s' if n != 1 else ''} in priors file {source or '(dict)'}"
        super().__init__(head + ":\n" + "\n".join(f"  - {p}" for p in problems))


@dataclass(frozen=True)
class Dist:
    """A prior distribution given by family name and parameters (values in the entry's unit)."""

    family: str
    params: Mapping[str, float]

    def numpyro(self):
        """The NumPyro distribution on the parameter's natural scale."""
        import numpyro.distributions as nd

        p = self.params
        f = self.family
        if f == "normal":
            return nd.Normal(p["mean"], p["sd"])
        if f == "lognormal":
            return nd.LogNormal(math.log(p["median"]), p["sd_log"])
        if f == "halfnormal":
            return nd.HalfNormal(p["scale"])
        if f == "halfcauchy":
            return nd.HalfCauchy(p["scale"])
        if f == "exponential":
            return nd.Exponential(p["rate"])
        if f == "beta":
            return nd.Beta(p["a"], p["b"])
        if f == "logitnormal":
            m = p["median"]
            return nd.TransformedDistribution(
                nd.Normal(math.log(m / (1 - m)), p["sd_logit"]),
                nd.transforms.SigmoidTransform(),
            )
        if f == "uniform":
            return nd.Uniform(p["low"], p["high"])
        if f == "fixed":
            return nd.Delta(p["value"])
        raise ValueError(f"unknown family {f!r}")  # pragma: no cover - validated on load

    @property
    def is_fixed(self) -> bool:
        return self.family == "fixed"

    def quantile(self, q: float) -> float:
        """The ``q`` quantile (0 < q < 1) of the distribution, in the entry's unit.

        Examples
        --------
        >>> Dist("lognormal", {"median": 16.0, "sd_log": 0.25}).quantile(0.5)
        16.0
        """
        from scipy import stats

        if not 0.0 < q < 1.0:
            raise ValueError(f"q={q!r}; expected 0 < q < 1")
        p = self.params
        f = self.family
        z = float(stats.norm.ppf(q))
        if f == "normal":
            return p["mean"] + p["sd"] * z
        if f == "lognormal":
            return float(p["median"] * math.exp(p["sd_log"] * z))
        if f == "logitnormal":
            m = p["median"]
            return float(1.0 / (1.0 + math.exp(-(math.log(m / (1 - m)) + p["sd_logit"] * z))))
        if f == "halfnormal":
            return float(p["scale"] * stats.norm.ppf(0.5 + q / 2))
        if f == "halfcauchy":
            return float(p["scale"] * math.tan(math.pi * q / 2))
        if f == "exponential":
            return float(-math.log1p(-q) / p["rate"])
        if f == "beta":
            return float(stats.beta.ppf(q, p["a"], p["b"]))
        if f == "uniform":
            return p["low"] + q * (p["high"] - p["low"])
        if f == "fixed":
            return p["value"]
        raise ValueError(f"unknown family {f!r}")  # pragma: no cover - validated on load

    def median(self) -> float:
        """The distribution's median (its centre on any monotone scale), in the entry's unit."""
        return self.quantile(0.5)


@dataclass(frozen=True)
class ParameterPrior:
    """Prior of one structural parameter's typical value, with its variability priors.

    ``bsv``, ``bsv_study`` and ``iov`` are priors on the standard deviations of the subject,
    study and occasion (inter-occasion, within subject) random effects on the ``transform``
    scale (log: ω ≈ CV for small ω); ``None`` = no such effect.
    """

    name: str
    unit: str
    prior: Dist
    transform: str = "log"
    bsv: Dist | None = None
    bsv_study: Dist | None = None
    iov: Dist | None = None
    source: str = ""
    assumption: bool = False
    #: The parameter's value is ``multiplier`` x a draw from ``prior`` (100 for percentages,
    #: whose priors are kept on the fraction scale).
    multiplier: float = 1.0


@dataclass(frozen=True)
class CovariateEffect:
    """A covariate effect on a parameter.

    Forms (θ the effect, ``cov`` the covariate, ``ref`` its reference value):
    ``power`` multiplies by ``(cov/ref)^θ``; ``linear`` by ``1 + θ·(cov − ref)``;
    ``exponential`` by ``exp(θ·(cov − ref))``; ``categorical`` by ``θ`` where ``cov == 1``
    (a 0/1 flag, e.g. a CYP3A4 inhibitor).
    """

    name: str
    parameter: str
    covariate: str
    form: str
    prior: Dist
    reference: float | None = None
    unit: str = ""
    source: str = ""
    assumption: bool = False


@dataclass(frozen=True)
class ResidualPrior:
    """Residual error of one endpoint: the model and priors of its magnitudes."""

    endpoint: str
    model: str
    unit: str
    terms: Mapping[str, Dist]
    source: str = ""
    assumption: bool = False


@dataclass(frozen=True)
class Priors:
    """Everything a priors file says. Build with :func:`load_priors`."""

    model: str | None
    parameters: Mapping[str, ParameterPrior]
    covariates: Mapping[str, CovariateEffect] = field(default_factory=dict)
    residuals: Mapping[str, ResidualPrior] = field(default_factory=dict)
    correlation: Mapping[str, Any] = field(default_factory=dict)
    #: ``[correlation_iov]``: ``{"parameters": [...], "lkj_eta": η}``, the parameters whose
    #: occasion effects are correlated within an occasion (each needs an ``iov``), or empty.
    correlation_iov: Mapping[str, Any] = field(default_factory=dict)
    source: str | None = None
    text: str = ""
    #: Optional entries of the file that the model variant does not use.
    ignored: tuple[str, ...] = ()
    #: The parsed file (plain mapping), kept so a fit can store and reload the priors it used.
    raw: Mapping[str, Any] = field(default_factory=dict)

    def typical(self) -> dict[str, float]:
        """Each parameter's prior median in the model's unit: the priors' typical values.

        Percentages kept on the fraction scale are multiplied back (``pd1_base`` 0.168 → 16.8 %).

        Examples
        --------
        >>> import pkpd
        >>> pkpd.load_priors(model="temsirolimus").typical()["cl"]   # L/h
        16.0
        """
        return {n: p.prior.median() * p.multiplier for n, p in self.parameters.items()}

    def typical_effects(self) -> dict[str, float]:
        """Each covariate effect's prior median (exponent, slope or ratio)."""
        return {n: e.prior.median() for n, e in self.covariates.items()}

    def with_residual(self, endpoint: str, model: str) -> Priors:
        """These priors with ``endpoint``'s residual error model switched to ``model``.

        The new model's terms keep the priors the file gives for terms of the same name
        (``combined`` → ``proportional`` keeps the proportional prior). A relative term the file
        does not have takes the file's other relative term (``proportional`` ↔ ``sd_log``:
        both are about a CV) or HalfNormal(0.3); an ``additive`` term must already be in the
        file, since its scale is in the endpoint's unit.

        Raises
        ------
        PriorsError
            For an endpoint without a residual entry, an unknown model, or an additive term
            with no prior to take.

        Examples
        --------
        >>> import pkpd
        >>> p = pkpd.load_priors(model="one_cmt_oral").with_residual("conc", "proportional")
        >>> p.residuals["conc"].model
        'proportional'
        """
        where = self.source
        if endpoint not in self.residuals:
            raise PriorsError(
                [f"no residual error entry for endpoint {endpoint!r} (it has "
                 f"{', '.join(self.residuals) or 'none'}); add [residual.{endpoint}]"], where
            )  # fmt: skip
        if model not in RESIDUAL_MODELS:
            raise PriorsError(
                [f"residual model {model!r} for {endpoint!r}; expected one of "
                 f"{', '.join(RESIDUAL_MODELS)}"], where
            )  # fmt: skip
        old = self.residuals[endpoint]
        relative = ("proportional", "sd_log", "sd_logit")
        terms = {}
        for t in RESIDUAL_MODELS[model]:
            if t in old.terms:
                terms[t] = old.terms[t]
            elif t in relative:
                given = [old.terms[r] for r in relative if r in old.terms]
                terms[t] = given[0] if given else Dist("halfnormal", {"scale": 0.3})
            else:
                raise PriorsError(
                    [f"residual.{endpoint}: a {model} error model needs a prior for {t!r} (in "
                     f"{old.unit or 'the endpoint unit'}); the file's {old.model} model has none: "
                     "add it to the priors file"], where
                )  # fmt: skip
        new = ResidualPrior(
            endpoint=endpoint,
            model=model,
            unit=old.unit,
            terms=terms,
            source=f"{old.source} (model switched from {old.model} to {model})",
            assumption=old.assumption,
        )
        # the parsed file too: a fit stores it, and reloads its priors from it
        raw = dict(self.raw)
        raw_res = dict(raw.get("residual", {}))
        raw_res[endpoint] = {
            "model": model,
            **({"unit": old.unit} if old.unit else {}),
            **{t: {"family": d.family, **dict(d.params)} for t, d in terms.items()},
            "source": new.source,
            "assumption": old.assumption,
        }
        raw["residual"] = raw_res
        text = self.text + f'\n# residual.{endpoint}: model switched to "{model}"\n'
        return dataclasses.replace(
            self, residuals={**self.residuals, endpoint: new}, raw=raw, text=text
        )

    def with_iov(self, parameter: str, scale: float = 0.3) -> Priors:
        """These priors with inter-occasion variability on ``parameter``: its ``iov`` prior set
        to HalfNormal(``scale``) (the SD of its occasion effects on the transform's scale; 0.3
        ≈ 30% CV on the log scale). CLI ``pkpd fit --iov cl=0.3``.

        Raises
        ------
        PriorsError
            For a parameter without an entry, or a scale that is not a positive number.

        Examples
        --------
        >>> import pkpd
        >>> pkpd.load_priors(model="one_cmt_oral").with_iov("cl", 0.2).parameters["cl"].iov
        Dist(family='halfnormal', params={'scale': 0.2})
        """
        where = self.source
        if parameter not in self.parameters:
            raise PriorsError(
                [f"iov on {parameter!r}: the priors have no entry for it (they have "
                 f"{', '.join(self.parameters) or 'none'})"], where
            )  # fmt: skip
        if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not scale > 0:
            raise PriorsError(
                [f"iov on {parameter!r}: scale {scale!r}; expected a positive number (the "
                 "half-normal scale of the occasion SD)"], where
            )  # fmt: skip
        dist = Dist("halfnormal", {"scale": float(scale)})
        raw = dict(self.raw)
        raw_par = dict(raw.get("parameters", {}))
        raw_par[parameter] = {**raw_par.get(parameter, {}), "iov": {"family": "halfnormal",
                                                                     "scale": float(scale)}}  # fmt: skip
        raw["parameters"] = raw_par
        text = self.text + f"\n# parameters.{parameter}: iov = halfnormal(scale={scale:g})\n"
        pp = dataclasses.replace(self.parameters[parameter], iov=dist)
        return dataclasses.replace(
            self, parameters={**self.parameters, parameter: pp}, raw=raw, text=text
        )

    def without_iov(self, parameters) -> Priors:
        """These priors with no inter-occasion variability on ``parameters`` (their ``iov``
        entries removed; a note in the text says so)."""
        parameters = [p for p in parameters if p in self.parameters]
        if not parameters:
            return self
        raw = dict(self.raw)
        raw_par = dict(raw.get("parameters", {}))
        for p in parameters:
            raw_par[p] = {k: v for k, v in raw_par.get(p, {}).items() if k != "iov"}
        raw["parameters"] = raw_par
        text = self.text + "".join(f"\n# parameters.{p}: iov removed\n" for p in parameters)
        pars = {
            p: dataclasses.replace(pp, iov=None) if p in parameters else pp
            for p, pp in self.parameters.items()
        }
        corr = dict(self.correlation_iov)
        if corr:
            # the occasion-effect correlation keeps the parameters still varying; fewer than
            # two left: no correlation
            left = [p for p in corr["parameters"] if p not in parameters]
            corr = {**corr, "parameters": left} if len(left) >= 2 else {}
            if corr:
                raw["correlation_iov"] = corr
            else:
                raw.pop("correlation_iov", None)
                text += "\n# correlation_iov removed\n"
        return dataclasses.replace(self, parameters=pars, raw=raw, text=text, correlation_iov=corr)

    def with_overrides(self, other: Priors) -> Priors:
        """These priors with the entries of ``other`` replacing or adding to them."""
        return Priors(
            model=self.model,
            parameters={**self.parameters, **other.parameters},
            covariates={**self.covariates, **other.covariates},
            residuals={**self.residuals, **other.residuals},
            correlation=other.correlation or self.correlation,
            correlation_iov=other.correlation_iov or self.correlation_iov,
            source=f"{self.source} + {other.source}",
            text=self.text + "\n# --- overrides ---\n" + other.text,
            raw=_merge(self.raw, other.raw),
        )


# ---------------------------------------------------------------------------------------------


def _merge(a: Mapping, b: Mapping) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = (
            _merge(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), Mapping) else v
        )
    return out


def bundled_priors_dir() -> Path:
    """The folder of the bundled priors files (the repository's ``priors/``, installed as
    package data)."""
    from pkpd._bundled import folder

    return folder("priors")


def load_priors(
    source: str | Path | Mapping | None = None,
    *,
    model: Any = None,
    require_all: bool = True,
) -> Priors:
    """Load and check a priors file.

    Parameters
    ----------
    source : path, mapping or None
        A TOML file (schema in ``priors/README.md``), an already parsed mapping, or ``None`` for
        the bundled default of ``model`` (``priors/<model name>.toml``).
    model : model object or str, optional
        Checks entries against the model's parameters (names and canonical units). An object
        needs ``name``, ``parameters`` (name → unit) and optionally ``defaults`` (name → value
        for parameters that may be left out, such as lag times).
    require_all : bool
        Every parameter of the model without a default needs a prior.

    Raises
    ------
    PriorsError
        Listing every mistake: unknown parameter, unknown family, missing or non-positive
        family parameters, missing unit, unit not the model's, inconsistent support.
    """
    model_name, known, defaults = _model_info(model)
    text = ""
    declared = False
    if source is None:
        if model_name is None:
            raise PriorsError(["give a priors file or a model whose default priors to load"], None)
        path = bundled_priors_dir() / f"{model_name}.toml"
        own = _declared_priors(model)
        if path.exists():
            source = path
        elif own is not None:
            source, declared = own, True
        else:
            raise PriorsError(
                [f"no bundled priors for model {model_name!r} and the model declares none; "
                 f"write a priors file (a template: pkpd priors --model {model_name} --out "
                 "priors.toml)"], str(path),
            )  # fmt: skip
    if isinstance(source, Mapping):
        raw, name = (
            dict(source),
            (f"the declarations of model {model_name!r}" if declared else None),
        )
        if declared:
            text = priors_toml(raw)
    else:
        path = Path(source)
        name = str(path)
        try:
            text = path.read_text(encoding="utf-8")
            raw = tomllib.loads(text)
        except FileNotFoundError:
            raise PriorsError([f"file not found: {path}"], name) from None
        except tomllib.TOMLDecodeError as e:
            raise PriorsError([f"not valid TOML: {e}"], name) from None
    return _Checker(raw, name, model_name, known, defaults, require_all, text).run()


def _declared_priors(model):
    """A model object's own priors (:attr:`pkpd.models.Model.default_priors`) or ``None``."""
    if model is None or isinstance(model, str):
        try:
            from pkpd.models import load_model

            model = load_model(model) if isinstance(model, str) else None
        except (ImportError, KeyError, ValueError):
            return None
    own = getattr(model, "default_priors", None) if model is not None else None
    return dict(own) if own is not None else None


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(float(v)) if isinstance(v, float) else str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(v, Mapping):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} to a priors file")


def _toml_key(k) -> str:
    k = str(k)
    return k if k.replace("_", "").replace("-", "").isalnum() else _toml_value(k)


def priors_toml(raw: Mapping, header: str = "") -> str:
    """A priors file's text for its parsed form (the schema of ``priors/README.md``: ``[model]``,
    ``[parameters.<name>]``, ``[covariates.<name>]``, ``[residual.<endpoint>]``,
    ``[correlation]``, ``[correlation_iov]``); ``tomllib.loads`` of the result gives ``raw``
    back."""
    lines = [f"# {x}" if x else "#" for x in header.splitlines()] + ([""] if header else [])
    if raw.get("model"):
        lines.append("[model]")
        lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in raw["model"].items()]
        lines.append("")
    for section in ("parameters", "covariates", "residual"):
        for name, entry in (raw.get(section) or {}).items():
            lines.append(f"[{section}.{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in entry.items()]
            lines.append("")
    for section in ("correlation", "correlation_iov"):
        if raw.get(section):
            lines.append(f"[{section}]")
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in raw[section].items()]
            lines.append("")
    return "\n".join(lines)


def priors_template(model) -> dict:
    """A priors file's parsed form for a model that has none: every parameter a wide
    log-normal around 1 in its unit (logit-normal around 0.5 for a unit of ``"%"`` or a
    fraction), a between-subject SD on each, a proportional error on each endpoint; every entry
    marked ``assumption = true`` with a source that says to replace it. Valid as it stands (a
    fit runs), meant to be edited."""
    params = {}
    for name, unit in model.parameters.items():
        if name not in model.structural_parameters:
            continue
        frac = unit in ("%", "1", "fraction", "") and name.startswith(("f", "imax", "emax"))
        entry = {"unit": unit}
        if frac and unit == "%":
            entry["transform"] = "logit"
            entry["prior"] = {"family": "logitnormal", "median": 50.0, "sd_logit": 1.5}
        elif frac:
            entry["transform"] = "logit"
            entry["prior"] = {"family": "logitnormal", "median": 0.5, "sd_logit": 1.5}
        else:
            entry["prior"] = {"family": "lognormal", "median": 1.0, "sd_log": 2.0}
        entry["bsv"] = {"family": "halfnormal", "scale": 0.5}
        entry["source"] = "placeholder: replace with a published value and its citation"
        entry["assumption"] = True
        params[name] = entry
    residual = {
        e: {
            "model": "proportional",
            "unit": unit,
            "proportional": {"family": "halfnormal", "scale": 0.3},
            "source": "placeholder: replace with your assay's error",
            "assumption": True,
        }
        for e, unit in model.endpoint_units.items()
    }
    return {"model": {"name": model.name}, "parameters": params, "residual": residual}


def _model_info(model):
    if model is None:
        return None, None, {}
    if isinstance(model, str):
        try:
            from pkpd.models import load_model

            model = load_model(model)
        except (ImportError, KeyError, ValueError):
            return model, None, {}
    from pkpd.models.base import check_model

    try:
        check_model(model)
    except TypeError as e:
        raise PriorsError([f"argument model: {e}"], "model") from None
    known = dict(model.parameters)
    # parameters outside the structural set (lag times, bioavailability, ...) are optional
    defaults: dict = {p: None for p in known if p not in model.structural_parameters}
    # parameters of the model family that this variant does not use (e.g. the PD parameters of
    # a PK-only temsirolimus fit) are ignored like optional entries
    defaults.update({p: None for p in model.all_parameters if p not in known})
    return model.name, known, defaults


class _Checker:
    def __init__(self, raw, source, model_name, known, defaults, require_all, text):
        self.raw = raw
        self.source = source
        self.model_name = model_name
        self.known = known
        self.defaults = defaults
        self.require_all = require_all
        self.text = text
        self.problems: list[str] = []
        self.ignored: list[str] = []

    def add(self, entry: str, msg: str) -> None:
        self.problems.append(f"[{entry}]: {msg}")

    def run(self) -> Priors:
        raw = self.raw
        allowed = {
            "model",
            "parameters",
            "covariates",
            "residual",
            "correlation",
            "correlation_iov",
        }
        for k in raw:
            if k not in allowed:
                self.add(k, f"unknown section; expected one of {', '.join(sorted(allowed))}")
        model_sec = raw.get("model", {})
        file_model = model_sec.get("name") if isinstance(model_sec, Mapping) else None
        if self.model_name and file_model and file_model != self.model_name:
            self.add(
                "model",
                f"the file is for model {file_model!r} but is used with {self.model_name!r}",
            )
        params = {}
        for name, entry in self._table(raw, "parameters").items():
            p = self._parameter(name, entry)
            if p is not None:
                params[name] = p
        if self.known is not None and self.require_all:
            given = self._table(raw, "parameters")
            missing = [n for n in self.known if n not in given and n not in self.defaults]
            for n in missing:
                self.add(
                    f"parameters.{n}",
                    f"model {self.model_name!r} parameter {n!r} ({self.known[n]}) has no prior; "
                    f'add [parameters.{n}] with unit = "{self.known[n]}" and a prior',
                )
        covs = {}
        for name, entry in self._table(raw, "covariates").items():
            c = self._covariate(name, entry, params)
            if c is not None:
                covs[name] = c
        res = {}
        for ep, entry in self._table(raw, "residual").items():
            r = self._residual(ep, entry)
            if r is not None:
                res[ep] = r
        corr = raw.get("correlation", {})
        if corr:
            corr = self._correlation(corr, params)
        corr_iov = raw.get("correlation_iov", {})
        if corr_iov:
            corr_iov = self._correlation(corr_iov, params, section="correlation_iov", sd="iov")
        if self.problems:
            raise PriorsError(self.problems, self.source)
        return Priors(
            model=file_model or self.model_name,
            parameters=params,
            covariates=covs,
            residuals=res,
            correlation=corr,
            correlation_iov=corr_iov,
            source=self.source,
            text=self.text,
            ignored=tuple(self.ignored),
            raw=raw,
        )

    def _table(self, raw, key) -> dict:
        t = raw.get(key, {})
        if not isinstance(t, Mapping):
            self.add(key, "expected a table of entries")
            return {}
        out = {}
        for name, entry in t.items():
            if not isinstance(entry, Mapping):
                self.add(f"{key}.{name}", "expected a table (keys such as unit, prior, source)")
            else:
                out[name] = entry
        return out

    def _dist(self, entry_name: str, key: str, spec, support: str | None = None) -> Dist | None:
        where = f"{entry_name}"
        if not isinstance(spec, Mapping):
            self.add(
                where,
                f'{key} must be a table like {{ family = "lognormal", median = 1.0, sd_log = 0.5 }}',
            )
            return None
        fam = spec.get("family")
        if fam not in FAMILIES:
            close = difflib.get_close_matches(str(fam), FAMILIES, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            self.add(
                where,
                f"{key}: unknown family {fam!r}{hint}; expected one of {', '.join(FAMILIES)}",
            )
            return None
        need = FAMILIES[fam]
        params = {}
        ok = True
        for k in need:
            v = spec.get(k)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                self.add(
                    where,
                    f"{key}: family {fam} needs a number {k} (got {v!r}); give {', '.join(need)}",
                )
                ok = False
                continue
            if k in _POSITIVE and v <= 0:
                self.add(where, f"{key}: {k} = {v} must be > 0 (a scale or shape of {fam})")
                ok = False
            params[k] = float(v)
        for k in spec:
            if k != "family" and k not in need:
                self.add(where, f"{key}: {fam} has no parameter {k!r}; expected {', '.join(need)}")
                ok = False
        if not ok:
            return None
        if fam == "lognormal" and params["median"] <= 0:
            self.add(where, f"{key}: lognormal median must be > 0")
            return None
        if fam == "logitnormal" and not 0 < params["median"] < 1:
            self.add(where, f"{key}: logitnormal median must lie in (0, 1)")
            return None
        if fam == "uniform" and not params["low"] < params["high"]:
            self.add(where, f"{key}: uniform needs low < high")
            return None
        if support is not None:
            s = _SUPPORT[fam]
            if (
                support == "positive"
                and s in ("real", "unit")
                or (support == "positive" and s == "interval" and params["low"] < 0)
            ):
                self.add(
                    where,
                    f"{key}: family {fam} does not match a positive (log-transformed) parameter; "
                    "use lognormal (or halfnormal), or set transform",
                )
                return None
            if (
                support == "unit"
                and s not in ("unit", "point")
                and not (s == "interval" and params["low"] >= 0 and params["high"] <= 1)
            ):
                self.add(
                    where,
                    f"{key}: family {fam} does not match a parameter in (0, 1) (logit transform); "
                    "use beta or logitnormal",
                )
                return None
            if support == "point" and s != "point":  # pragma: no cover
                return None
        return Dist(fam, params)

    def _unit(self, where: str, entry, expected: str | None) -> str:
        unit = entry.get("unit")
        if not isinstance(unit, str):
            hint = f' (the model uses "{expected}")' if expected is not None else ""
            self.add(where, f'missing unit; add unit = "..."{hint}. Use "1" for unitless values')
            return ""
        if expected is not None and unit.replace(" ", "") != expected.replace(" ", ""):
            self.add(
                where,
                f"unit {unit!r} is not the model's unit {expected!r}; pkpd uses one unit system "
                "(h, mg, L, L/h, ng/mL); convert the prior's values",
            )
        return unit

    def _parameter(self, name: str, entry) -> ParameterPrior | None:
        where = f"parameters.{name}"
        expected = None
        if self.known is not None:
            if name not in self.known and (entry.get("optional") is True or name in self.defaults):
                self.ignored.append(name)
                return None
            if name not in self.known:
                close = difflib.get_close_matches(name, self.known, n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                self.add(
                    where,
                    f"unknown parameter {name!r} for model {self.model_name!r}{hint} "
                    f"(known: {', '.join(self.known)})",
                )
                return None
            expected = self.known[name]
        allowed = {
            "unit", "prior", "transform", "bsv", "bsv_study", "iov", "source", "assumption",
            "optional",
        }  # fmt: skip
        for k in entry:
            if k not in allowed:
                self.add(where, f"unknown key {k!r}; expected {', '.join(sorted(allowed))}")
        unit = self._unit(where, entry, expected)
        transform = entry.get("transform", "log")
        if transform not in TRANSFORMS:
            self.add(where, f"transform {transform!r}; expected one of {', '.join(TRANSFORMS)}")
            return None
        support = {"log": "positive", "logit": "unit", "identity": None}[transform]
        if "prior" not in entry:
            self.add(where, "missing prior; add prior = { family = ..., ... }")
            return None
        multiplier = 1.0
        if transform == "logit" and unit == "%" and isinstance(entry["prior"], Mapping):
            # A percentage: the distribution is kept on the fraction scale (value / 100), so
            # medians and bounds written in % are divided by 100; the parameter is 100 x draw.
            spec = dict(entry["prior"])
            for k in ("median", "low", "high", "value"):
                if k in spec and isinstance(spec[k], (int, float)):
                    spec[k] = spec[k] / 100.0
            multiplier = 100.0
            prior = self._dist(where, "prior", spec, support)
        else:
            prior = self._dist(where, "prior", entry["prior"], support)
        bsv = self._dist(where, "bsv", entry["bsv"], "positive") if "bsv" in entry else None
        bsv_study = (
            self._dist(where, "bsv_study", entry["bsv_study"], "positive")
            if "bsv_study" in entry
            else None
        )
        iov = self._dist(where, "iov", entry["iov"], "positive") if "iov" in entry else None
        source = self._source(where, entry)
        if prior is None:
            return None
        return ParameterPrior(
            name=name,
            unit=unit,
            prior=prior,
            transform=transform,
            bsv=bsv,
            bsv_study=bsv_study,
            iov=iov,
            source=source,
            assumption=bool(entry.get("assumption", False)),
            multiplier=multiplier,
        )

    def _source(self, where, entry) -> str:
        s = entry.get("source", "")
        if not isinstance(s, str):
            self.add(where, "source must be a string citing where the numbers come from")
            return ""
        return s

    def _covariate(self, name, entry, params) -> CovariateEffect | None:
        where = f"covariates.{name}"
        from pkpd.inference.names import is_safe

        if not is_safe(name):
            # the effect's posterior variable is beta_<name>, stored in netCDF: checked here,
            # not when a fit is saved after sampling
            self.add(
                where,
                "an effect's name must be ASCII letters, digits and _ (it names the posterior "
                'variable beta_<name>); the data column\'s own name goes in covariate = "..."',
            )
            return None
        allowed = {
            "parameter",
            "covariate",
            "form",
            "reference",
            "unit",
            "prior",
            "source",
            "assumption",
        }
        for k in entry:
            if k not in allowed:
                self.add(where, f"unknown key {k!r}; expected {', '.join(sorted(allowed))}")
        par = entry.get("parameter")
        if not isinstance(par, str):
            self.add(where, 'missing parameter = "..." (the parameter the covariate acts on)')
            return None
        if self.known is not None and par not in self.known:
            self.add(where, f"parameter {par!r} is not a parameter of model {self.model_name!r}")
        cov = entry.get("covariate")
        if not isinstance(cov, str) or not cov:
            self.add(where, 'missing covariate = "..." (the data column, e.g. BSA)')
            return None
        form = entry.get("form", "power")
        if form not in COVARIATE_FORMS:
            self.add(where, f"form {form!r}; expected one of {', '.join(COVARIATE_FORMS)}")
            return None
        ref = entry.get("reference")
        if form in ("power", "linear", "exponential"):
            if isinstance(ref, bool) or not isinstance(ref, (int, float)):
                self.add(where, f"form {form} needs a numeric reference value of {cov}")
                return None
            if form == "power" and ref <= 0:
                self.add(where, "a power model needs reference > 0")
                return None
        unit = self._unit(where, entry, None)
        support = "positive" if form == "categorical" else None
        if "prior" not in entry:
            self.add(where, "missing prior")
            return None
        prior = self._dist(where, "prior", entry["prior"], support)
        if prior is None:
            return None
        return CovariateEffect(
            name=name,
            parameter=par,
            covariate=cov.upper(),
            form=form,
            prior=prior,
            reference=None if ref is None else float(ref),
            unit=unit,
            source=self._source(where, entry),
            assumption=bool(entry.get("assumption", False)),
        )

    def _residual(self, ep, entry) -> ResidualPrior | None:
        where = f"residual.{ep}"
        model = entry.get("model")
        if model not in RESIDUAL_MODELS:
            self.add(where, f"model {model!r}; expected one of {', '.join(RESIDUAL_MODELS)}")
            return None
        unit = self._unit(where, entry, None)
        terms = {}
        for t in RESIDUAL_MODELS[model]:
            if t not in entry:
                self.add(where, f"a {model} error model needs a prior for {t!r}")
                continue
            d = self._dist(where, t, entry[t], "positive")
            if d is not None:
                terms[t] = d
        allowed = {"model", "unit", "source", "assumption", *RESIDUAL_MODELS[model]}
        for k in entry:
            if k not in allowed:
                self.add(
                    where,
                    f"unknown key {k!r} for a {model} error model; expected {', '.join(sorted(allowed))}",
                )
        if len(terms) != len(RESIDUAL_MODELS[model]):
            return None
        return ResidualPrior(
            endpoint=ep,
            model=model,
            unit=unit,
            terms=terms,
            source=self._source(where, entry),
            assumption=bool(entry.get("assumption", False)),
        )

    def _correlation(self, corr, params, section="correlation", sd="bsv"):
        """``[correlation]`` (subject effects: parameters with ``bsv``) or
        ``[correlation_iov]`` (occasion effects: parameters with ``iov``)."""
        if not isinstance(corr, Mapping):
            self.add(section, "expected a table with parameters = [...] and lkj_eta")
            return {}
        unknown = sorted(set(corr) - {"parameters", "lkj_eta"})
        if unknown:
            self.add(section, f"unknown key(s) {', '.join(unknown)}; expected parameters, lkj_eta")
        names = corr.get("parameters", [])
        eta = corr.get("lkj_eta", 2.0)
        if not isinstance(names, list) or len(names) < 2:
            self.add(section, f"parameters must list at least two parameters with {sd}")
        else:
            for n in names:
                if not isinstance(n, str) or n not in params or getattr(params[n], sd) is None:
                    self.add(section, f"parameter {n!r} has no {sd} prior to correlate")
            if len(set(map(str, names))) != len(names):
                self.add(section, "parameters lists a parameter twice")
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or eta <= 0:
            self.add(section, "lkj_eta must be a number > 0 (1 = uniform over correlations)")
        return {
            "parameters": list(names) if isinstance(names, list) else [],
            "lkj_eta": float(eta) if isinstance(eta, (int, float)) else 2.0,
        }
