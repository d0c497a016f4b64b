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
    # nuts: num_warmup, num_samples, num_chains, chain_method ("parallel": over devices)
    # num_devices = 4              # cap on the devices trials/chains/particles are split over
    evidence = "iwae"              # "iwae" | "smc" | "bridge" | "laplace" | "exact" | "none"
    evidence_options = { num_importance = 500 }   # as log_evidence takes them, per method

Priors are parsed by a fixed grammar, never evaluated: ``Name(arg, ...)`` with ``Name`` one of
:data:`PRIOR_DISTRIBUTIONS` and each argument a number (``0.5``, ``-1e-3``) or a list of numbers
(``[1, 1, 1]``), optionally named (``Normal(loc=0, scale=2)``). Every error names the key and
what was expected, in one line.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpyro.distributions as dist

from probdyn.errors import ConfigError

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
EVIDENCE_METHODS = ("iwae", "smc", "bridge", "laplace", "exact", "none")
_SECTIONS = {
    "": {"seed", "out", "memory_limit", "data", "model", "inference"},
    "data": {"source", "path", "simulator", "options"},
    "model": {"family", "hyperparameters", "priors"},
    "inference": {
        "method",
        "num_steps",
        "guide",
        "learning_rate",
        "batch_size",
        "num_warmup",
        "num_samples",
        "num_chains",
        "chain_method",
        "num_devices",
        "evidence",
        "evidence_options",
        "num_draws",
        "coordinated_dropout",
        "encoder_dropout",
        "warmup",
    },
}
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
        return PRIOR_DISTRIBUTIONS[name](*positional, **named, validate_args=True)
    except (TypeError, ValueError) as error:
        raise ConfigError(
            f"model.priors.{key}: {name}{inside and f'({inside})'}: {error}"
        ) from None


def _check_keys(table: Mapping, section: str) -> None:
    unknown = sorted(set(table) - _SECTIONS[section])
    if unknown:
        where = f"[{section}]" if section else "the top level"
        raise ConfigError(
            f"config: unknown key(s) {unknown} in {where}; expected some of "
            f"{sorted(_SECTIONS[section])}"
        )


def _expect(value, kind: type, key: str):
    """``value`` if it is a ``kind`` (a bool is not an int here), else a ConfigError."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"config: {key} = {value!r}; expected a {kind.__name__}")
    return value


def load_config(path: str | Path) -> dict[str, Any]:
    """Read and check a run configuration; returns it with defaults filled in."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no config file at {path}")
    try:
        config = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config: {path} is not valid TOML ({error})") from None
    _check_keys(config, "")
    for section in ("data", "model"):
        if section not in config:
            raise ConfigError(f"config: missing section [{section}]")
        _expect(config[section], dict, section)
        _check_keys(config[section], section)
    inference = _expect(config.setdefault("inference", {}), dict, "inference")
    _check_keys(inference, "inference")
    _expect(config.setdefault("seed", 0), int, "seed")
    _expect(config.setdefault("out", f"probdyn-fit-{path.stem}"), str, "out")
    if "memory_limit" in config:
        from probdyn.runtime.memory import parse_size

        parse_size(config["memory_limit"])  # one line naming the key's problem, now

    data = config["data"]
    source = data.get("source")
    if source not in SOURCES:
        raise ConfigError(f"config: data.source = {source!r}; expected one of {list(SOURCES)}")
    if source == "simulate":
        if data.get("simulator") not in SIMULATORS:
            raise ConfigError(
                f"config: data.simulator = {data.get('simulator')!r}; expected one of "
                f"{list(SIMULATORS)}"
            )
    elif not isinstance(data.get("path"), str):
        raise ConfigError(f"config: data.path is required (a file path) for source = {source!r}")
    _expect(data.setdefault("options", {}), dict, "data.options")

    model = config["model"]
    from probdyn.models import FAMILIES

    if model.get("family") not in FAMILIES:
        raise ConfigError(
            f"config: model.family = {model.get('family')!r}; expected one of {sorted(FAMILIES)}"
        )
    _expect(model.setdefault("hyperparameters", {}), dict, "model.hyperparameters")
    priors = _expect(model.setdefault("priors", {}), dict, "model.priors")
    for key, text in priors.items():
        parse_prior(text, key)  # errors now, naming the key

    method = inference.setdefault("method", "svi")
    if method not in ("svi", "nuts"):
        raise ConfigError(f"config: inference.method = {method!r}; expected 'svi' or 'nuts'")
    evidence = inference.setdefault("evidence", "iwae" if method == "svi" else "none")
    if evidence not in EVIDENCE_METHODS:
        raise ConfigError(
            f"config: inference.evidence = {evidence!r}; expected one of {list(EVIDENCE_METHODS)}"
        )
    options = _expect(inference.setdefault("evidence_options", {}), dict, "evidence_options")
    if options and evidence != "none":
        from probdyn.inference.evidence import method_options

        # The fit's own result is passed by probdyn fit, not written in a config.
        allowed = [o for o in method_options(evidence) if o not in ("svi_result", "mcmc_result")]
        unknown = sorted(set(options) - set(allowed))
        if unknown:
            raise ConfigError(
                f"config: inference.evidence_options {unknown} do not apply to evidence = "
                f"{evidence!r}; expected some of {allowed}"
            )
    chain_method = inference.setdefault("chain_method", "vectorized")
    if chain_method not in ("vectorized", "parallel", "sequential"):
        raise ConfigError(
            f"config: inference.chain_method = {chain_method!r}; expected 'vectorized', "
            "'parallel' or 'sequential'"
        )
    if "learning_rate" in inference:
        rate = inference["learning_rate"]
        if isinstance(rate, bool) or not isinstance(rate, int | float) or not rate > 0:
            raise ConfigError(
                f"config: inference.learning_rate = {rate!r}; expected a positive number"
            )
    for key in ("guide", "evidence"):
        if key in inference:
            _expect(inference[key], str, f"inference.{key}")
    if (
        "batch_size" in inference
        and _expect(inference["batch_size"], int, "inference.batch_size") < 1
    ):
        raise ConfigError(
            f"config: inference.batch_size = {inference['batch_size']}; expected >= 1"
        )
    for key in ("coordinated_dropout", "encoder_dropout"):
        if key in inference:
            value = inference[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
                raise ConfigError(
                    f"config: inference.{key} = {value!r}; expected a fraction in [0, 1)"
                )
    if "warmup" in inference and (_expect(inference["warmup"], int, "inference.warmup") < 0):
        raise ConfigError(f"config: inference.warmup = {inference['warmup']}; expected >= 0")
    for key in ("num_steps", "num_warmup", "num_samples", "num_chains", "num_draws", "num_devices"):
        if key in inference and (_expect(inference[key], int, f"inference.{key}") < 1):
            raise ConfigError(f"config: inference.{key} = {inference[key]}; expected >= 1")
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
    from probdyn import data as data_layer

    data = config["data"]
    options = dict(data["options"])
    try:
        if data["source"] == "simulate":
            options.setdefault("seed", config["seed"])
            return getattr(data_layer, data["simulator"])(**options)
        loader = {"netcdf": data_layer.load, "nlb": data_layer.load_nlb, "nwb": data_layer.load_nwb}
        return loader[data["source"]](data["path"], **options)
    except TypeError as error:
        raise ConfigError(f"config: data.options: {error}") from None
