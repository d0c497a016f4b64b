"""Model families, each a generative NumPyro program behind :class:`probdyn.Model`."""

import dataclasses

from probdyn.errors import ConfigError
from probdyn.models.facrnn import FacRNN
from probdyn.models.hmm import HMM
from probdyn.models.lds import LDS
from probdyn.models.node import NODE
from probdyn.models.rnn_emulator import RNNEmulator
from probdyn.models.sdernn import SDERNN
from probdyn.models.seqvae import SeqVAE

FAMILIES = {
    "FacRNN": FacRNN,
    "HMM": HMM,
    "LDS": LDS,
    "NODE": NODE,
    "RNNEmulator": RNNEmulator,
    "SDERNN": SDERNN,
    "SeqVAE": SeqVAE,
}


def from_spec(spec: dict):
    """Rebuild a model (default priors) from :meth:`probdyn.Model.spec`."""
    spec = dict(spec)
    family = spec.pop("family", None)
    if family not in FAMILIES:
        raise ConfigError(f"unknown model family {family!r}; expected one of {sorted(FAMILIES)}")
    if "marginalize" in spec:  # run files written before `marginal` (LDS only)
        spec["marginal"] = "sample" if spec.pop("marginalize") is False else None
    fields = {field.name for field in dataclasses.fields(FAMILIES[family])}
    if "parameterisation" in fields and "parameterisation" not in spec:
        spec["parameterisation"] = "redundant"  # the only form before the option existed
    try:
        return FAMILIES[family](**spec)
    except TypeError as error:
        raise ConfigError(f"bad hyperparameters for {family}: {error}") from None


__all__ = [
    "FAMILIES",
    "HMM",
    "LDS",
    "NODE",
    "SDERNN",
    "FacRNN",
    "RNNEmulator",
    "SeqVAE",
    "from_spec",
]
