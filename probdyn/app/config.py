r"""Run configurations (TOML) for ``probdyn fit``: data, model, priors, inference, seed, output.

.. code-block:: toml

    seed = 0
    out = "fits/double-well"
    memory_limit = "4GB"           # optional: chunked steps keep the process under it

    [data]
    source = "simulate"            # "netcdf" | "nlb" | "nwb" | "simulate"
    simulator = "simulate_sde"     # with source = "simulate"
    # path = "recording.nc"        # with the file sources
    [data.options]                 # passed to the loader or simulator
    system = "double_well"
    num_trials = 20

    [model]
    family = "SDERNN"
    [model.hyperparameters]
    num_units = 20
    rank = 2
    observation = "latent"
    [model.priors]                 # site = "Distribution(numbers)"
    sigma = "HalfNormal(0.5)"

    [inference]
    method = "svi"                 # "svi" | "nuts"
    num_steps = 2000               # svi: num_steps, guide, learning_rate, batch_size,
    # coordinated_dropout, encoder_dropout, warmup (amortised guides: see AutoencoderELBO)
    # nuts: num_warmup, num_samples, num_chains, chain_method ("parallel": over devices),
    # warm_start (SVI steps whose guide starts the chains and sets their mass matrix; 0: none;
    # by default 2000, or 0 where the chains sample per-trial paths)
    # num_devices = 4              # cap on the devices trials/chains/particles are split over
    evidence = "iwae"             # iwae | smc | ais | bridge | laplace | exact | none
    evidence_options = { num_importance = 500 }   # as log_evidence takes them, per method

Priors are parsed by a fixed grammar, never evaluated: ``Name(arg, ...)`` with ``Name`` one of
:data:`PRIOR_DISTRIBUTIONS` and each argument a number (``0.5``, ``-1e-3``) or a list of numbers
(``[1, 1, 1]``), optionally named (``Normal(loc=0, scale=2)``). Every error names the key and
what was expected, in one line.
"""

from __future__ import annotations

import re
import tomllib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import jax
import jax.numpy as jnp
import numpyro.distributions as dist

from probdyn.errors import ConfigError
from probdyn.schema import (
    Count,
    Fraction,
    NonNegativeInt,
    Positive,
    Range,
    check_options,
    violation,
)

#: Distributions a prior string may name.
PRIOR_DISTRIBUTIONS = {
    name: getattr(dist, name)
    for name in (
        "Normal",
        "HalfNormal",
        "LogNormal",
        "Gamma",
        "InverseGamma",
        "Exponential",
        "Beta",
        "Uniform",
        "Cauchy",
        "HalfCauchy",
        "StudentT",
        "Laplace",
        "Dirichlet",
        "Delta",
    )
}
SOURCES = ("netcdf", "nlb", "nwb", "simulate")
SIMULATORS = ("simulate_sde", "simulate_attractor", "simulate_hmm")
EVIDENCE_METHODS = ("iwae", "smc", "ais", "bridge", "laplace", "exact", "none")
_CALL = re.compile(r"^\s*([A-Za-z]+)\s*\((.*)\)\s*$")
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


def _number(text: str, key: str) -> float:
    text = text.strip()
    if not _NUMBER.match(text):
        raise ConfigError(f"model.priors.{key}: {text!r} is not a number")
    return float(text)


def _split_arguments(text: str, key: str) -> list[str]:
    """Split at top-level commas (lists in brackets stay whole)."""
    parts, depth, current = [], 0, ""
    for char in text:
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise ConfigError(f"model.priors.{key}: unbalanced or nested brackets in {text!r}")
        if char == "," and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    if depth:
        raise ConfigError(f"model.priors.{key}: unbalanced brackets in {text!r}")
    parts.append(current)
    return [p for p in parts if p.strip()] if text.strip() else []


def _argument(text: str, key: str):
    text = text.strip()
    if text.startswith("["):
        return jnp.asarray([_number(t, key) for t in text[1:-1].split(",") if t.strip()])
    return _number(text, key)


def parse_prior(text: str, key: str = "prior") -> dist.Distribution:
    """A distribution from a string like ``"Normal(0, 0.5)"`` (fixed grammar, no eval)."""
    if not isinstance(text, str):
        raise ConfigError(f"model.priors.{key}: expected a string like 'Normal(0, 1)'")
    match = _CALL.match(text)
    if not match:
        raise ConfigError(f"model.priors.{key}: {text!r} is not of the form Name(arguments)")
    name, inside = match.groups()
    if name not in PRIOR_DISTRIBUTIONS:
        raise ConfigError(
            f"model.priors.{key}: unknown distribution {name!r}; expected one of "
            f"{sorted(PRIOR_DISTRIBUTIONS)}"
        )
    positional, named = [], {}
    for part in _split_arguments(inside, key):
        label, sep, value = part.partition("=")
        if sep:
            if not label.strip().isidentifier():
                raise ConfigError(f"model.priors.{key}: bad argument name {label.strip()!r}")
            named[label.strip()] = _argument(value, key)
        elif named:
            raise ConfigError(f"model.priors.{key}: positional argument after a named one")
        else:
            positional.append(_argument(part, key))
    try:
        prior = PRIOR_DISTRIBUTIONS[name](*positional, **named, validate_args=True)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"model.priors.{key}: {name}{inside and f'({inside})'}: {error}"
        ) from None
    # Arguments some distributions do not validate (Uniform(1, 0), Delta(inf)): a draw must be
    # finite and have a finite log density.
    draw = prior.sample(jax.random.key(0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NumPyro warns of the out-of-support draw it refuses
        density = prior.log_prob(draw)
    if not (jnp.isfinite(draw).all() and jnp.isfinite(density).all()):
        raise ConfigError(
            f"model.priors.{key}: {text!r} is not a proper distribution (a draw has log density "
            f"{float(jnp.min(density))})"
        )
    return prior


def schema() -> dict[str, dict[str, Any]]:
    """Every key of every section of a run configuration, with its type and range.

    Read by :func:`probdyn.schema.violation`; the tables under ``data.options``,
    ``model.hyperparameters`` and ``inference.evidence_options`` are checked against the
    annotations of the function or family they are passed to (:func:`load_config`).
    """
    from probdyn.inference.amortised import AMORTISED_GUIDES
    from probdyn.inference.guides import GUIDES
    from probdyn.models import FAMILIES

    return {
        "": {
            "seed": Annotated[int, Range(0, 2**32 - 1)],
            "out": str,
            "memory_limit": str | Positive,
            "data": dict,
            "model": dict,
            "inference": dict,
        },
        "data": {
            "source": Literal[SOURCES],
            "path": str,
            "simulator": Literal[SIMULATORS],
            "options": dict,
        },
        "model": {
            "family": Literal[tuple(sorted(FAMILIES))],
            "hyperparameters": dict,
            "priors": dict[str, str],
        },
        "inference": {
            "method": Literal["svi", "nuts"],
            "num_steps": Count,
            "guide": Literal[("auto", *sorted(GUIDES), *sorted(AMORTISED_GUIDES))],
            "learning_rate": Positive,
            "batch_size": Count,
            "num_warmup": Count,
            "num_samples": Count,
            "num_chains": Count,
            "chain_method": Literal["vectorized", "parallel", "sequential"],
            "warm_start": NonNegativeInt,
            "num_devices": Count,
            "evidence": Literal[EVIDENCE_METHODS],
            "evidence_options": dict,
            "num_draws": Count,
            "coordinated_dropout": Fraction,
            "encoder_dropout": Fraction,
            "warmup": NonNegativeInt,
        },
    }


def _check_section(table: Any, section: str, keys: Mapping[str, Any]) -> None:
    """Unknown keys and values of the wrong type or range, each refused in one line."""
    where = f"[{section}]" if section else "the top level"
    if not isinstance(table, Mapping):
        raise ConfigError(f"config: {section} = {table!r}; expected a table [{section}]")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigError(
            f"config: unknown key(s) {unknown} in {where}; expected some of {sorted(keys)}"
        )
    prefix = f"{section}." if section else ""
    for key, value in table.items():
        wrong = violation(value, keys[key])
        if wrong:
            raise ConfigError(f"config: {prefix}{key} = {value!r}; expected {wrong}")


def _check_options(function, options: Mapping[str, Any], where: str, skip=()) -> None:
    wrong = check_options(function, options, where, skip=skip)
    if wrong:
        raise ConfigError(f"config: {wrong}")


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a run configuration; returns it with defaults filled in.

    Every key is checked against :func:`schema` (and the options of what it configures)
    before anything runs; each problem is a one-line :class:`~probdyn.errors.ConfigError`.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    try:
        config = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"config: {path} is not valid TOML ({error})") from None
    keys = schema()
    _check_section(config, "", keys[""])
    for section in ("data", "model"):
        if section not in config:
            raise ConfigError(f"config: missing section [{section}]")
    for section in ("data", "model", "inference"):
        _check_section(config.setdefault(section, {}), section, keys[section])
    config.setdefault("seed", 0)
    config.setdefault("out", f"probdyn-fit-{path.stem}")
    if "memory_limit" in config:
        from probdyn.runtime.memory import parse_size

        parse_size(config["memory_limit"])  # one line naming the key's problem, now

    data = config["data"]
    if "source" not in data:
        raise ConfigError(f"config: data.source is required; expected one of {list(SOURCES)}")
    options = data.setdefault("options", {})
    if data["source"] == "simulate":
        if "simulator" not in data:
            raise ConfigError(
                f"config: data.simulator is required for source = 'simulate'; expected one of "
                f"{list(SIMULATORS)}"
            )
    elif "path" not in data:
        raise ConfigError(
            f"config: data.path is required (a file path) for source = {data['source']!r}"
        )
    _check_options(_reader(data), options, "data.options", skip=("path",))

    from probdyn.models import FAMILIES

    model = config["model"]
    if "family" not in model:
        raise ConfigError(f"config: model.family is required; expected one of {sorted(FAMILIES)}")
    hyperparameters = model.setdefault("hyperparameters", {})
    family = FAMILIES[model["family"]]
    _check_options(family, hyperparameters, "model.hyperparameters", skip=("priors",))
    for key, text in model.setdefault("priors", {}).items():
        parse_prior(text, key)  # errors now, naming the key

    inference = config["inference"]
    method = inference.setdefault("method", "svi")
    evidence = inference.setdefault("evidence", "iwae" if method == "svi" else "none")
    inference.setdefault("chain_method", "vectorized")
    options = inference.setdefault("evidence_options", {})
    if options and evidence == "none":
        raise ConfigError("config: inference.evidence_options given with evidence = 'none'")
    if options:
        from probdyn.inference.evidence import check_method_options

        # The fit's own result is passed by probdyn fit, not written in a config.
        check_method_options(
            evidence,
            options,
            where="config: inference.evidence_options",
            filled=("svi_result", "mcmc_result", "posterior"),
        )
    return config


#: Keys that may change between a run and its resumption (they do not change the result).
RESUMABLE_CHANGES = ("out", "memory_limit")


def same_run(saved: Mapping[str, Any], config: Mapping[str, Any]) -> bool:
    """Whether two checked configs describe the same run (up to :data:`RESUMABLE_CHANGES`)."""

    def essence(c):
        return {k: v for k, v in c.items() if k not in RESUMABLE_CHANGES}

    return essence(saved) == essence(config)


def build_model(config: Mapping[str, Any]):
    """The configured model, with its priors parsed."""
    from probdyn.models import FAMILIES

    model = config["model"]
    priors = {key: parse_prior(text, key) for key, text in model["priors"].items()}
    try:
        return FAMILIES[model["family"]](**model["hyperparameters"], priors=priors or None)
    except TypeError as error:
        raise ConfigError(f"config: model.hyperparameters for {model['family']}: {error}") from None


def load_data(config: Mapping[str, Any]):
    """The configured recording (a Dataset in probdyn's data convention)."""
    data = config["data"]
    options = dict(data["options"])
    try:
        if data["source"] == "simulate":
            options.setdefault("seed", config["seed"])
            return _reader(data)(**options)
        return _reader(data)(data["path"], **options)
    except TypeError as error:
        raise ConfigError(f"config: data.options: {error}") from None


def _reader(data: Mapping[str, Any]):
    """The simulator or file loader a ``[data]`` section names."""
    from probdyn import data as data_layer

    if data["source"] == "simulate":
        return getattr(data_layer, data["simulator"])
    loaders = {"netcdf": data_layer.load, "nlb": data_layer.load_nlb, "nwb": data_layer.load_nwb}
    return loaders[data["source"]]
