"""Security labels (``meta.security``) for what we write about a client: one definition for every writer.

Score Observations and DetectedIssues may carry a confidentiality code from HL7's v3
Confidentiality system, and optionally information-sensitivity codes from v3 ActCode, so that
servers with label-based access control can keep alliance results from the client (why these
codes, with citations: ``docs/hiding-results.md``). Sync, serve, the offline ``score`` and every
other writer take the same :class:`SecurityLabels` value and put the same Codings in the same
place, so a score written by any of them is byte for byte the same resource.

Labels off (``SecurityLabels()``, the default) writes nothing: the resources are exactly what
they were before labels existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from ._ids import ACT_CODE_SYSTEM, CONFIDENTIALITY_SYSTEM
from ._json import dumps
from .errors import ConfigError

__all__ = ["CONFIDENTIALITY_CODES", "SENSITIVITY_CODES", "NO_LABELS", "SecurityLabels", "carries_labels", "with_labels"]

# v3 Confidentiality (terminology.hl7.org), least to most restricted; displays as HL7 publishes them.
CONFIDENTIALITY_CODES: Mapping[str, str] = {
    "U": "unrestricted",
    "L": "low",
    "M": "moderate",
    "N": "normal",
    "R": "restricted",
    "V": "very restricted",
}
# The v3 ActCode information-sensitivity codes that can describe alliance results. PSYTHPN
# (psychotherapy notes) is deliberately absent: HIPAA's psychotherapy notes exclude test results.
SENSITIVITY_CODES: Mapping[str, str] = {
    "PSY": "psychiatry disorder information sensitivity",
    "MH": "mental health information sensitivity",
    "BH": "behavioral health information sensitivity",
}


@dataclass(frozen=True, slots=True)
class SecurityLabels:
    """The labels to write: a confidentiality code (None: no labels) and sensitivity codes.

    Plain strings only, so the value pickles into ``score --jobs`` workers unchanged.
    """

    confidentiality: str | None = None
    sensitivity: tuple[str, ...] = ()

    @classmethod
    def parse(cls, confidentiality: str | None, sensitivity: Iterable[str] = ()) -> SecurityLabels:
        """Labels from settings text: codes are case-sensitive HL7 codes (``R``, ``PSY``); empty means off.

        Raises:
            ConfigError: an unknown code, or sensitivity codes without a confidentiality code.
        """
        conf = (confidentiality or "").strip() or None
        if conf is not None and conf not in CONFIDENTIALITY_CODES:
            raise ConfigError(
                f"confidentiality {conf!r} is not a v3 Confidentiality code ({', '.join(CONFIDENTIALITY_CODES)})"
            )
        codes = tuple(dict.fromkeys(c.strip() for c in sensitivity if c.strip()))
        unknown = [c for c in codes if c not in SENSITIVITY_CODES]
        if unknown:
            raise ConfigError(
                f"sensitivity {', '.join(unknown)}: not one of the v3 ActCode sensitivity codes we write "
                f"({', '.join(SENSITIVITY_CODES)})"
            )
        if codes and conf is None:
            raise ConfigError("a sensitivity label needs a confidentiality code too (e.g. confidentiality R)")
        return cls(conf, codes)

    def __bool__(self) -> bool:
        return self.confidentiality is not None

    @property
    def fingerprint(self) -> str:
        """A short text naming the labels (``R+PSY``; empty when off): what sync remembers it applied."""
        return "+".join(([self.confidentiality] if self.confidentiality else []) + list(self.sensitivity))

    def codings(self) -> list[dict[str, str]]:
        """The ``meta.security`` Codings (fresh dicts): confidentiality first, then sensitivity."""
        if self.confidentiality is None:
            return []
        out = [
            {
                "system": CONFIDENTIALITY_SYSTEM,
                "code": self.confidentiality,
                "display": CONFIDENTIALITY_CODES[self.confidentiality],
            }
        ]
        return out + [{"system": ACT_CODE_SYSTEM, "code": c, "display": SENSITIVITY_CODES[c]} for c in self.sensitivity]

    def meta_json(self) -> bytes:
        """``,"meta":{"security":[...]}`` as compact JSON (empty when off), for byte-built resources."""
        return _meta_json(self) if self else b""


NO_LABELS = SecurityLabels()


@lru_cache(maxsize=16)
def _meta_json(labels: SecurityLabels) -> bytes:
    return b',"meta":' + dumps({"security": labels.codings()})


def with_labels(resource: dict[str, Any], labels: SecurityLabels) -> dict[str, Any]:
    """``resource`` with ``meta.security`` added right after ``resourceType`` (unchanged when labels are off).

    Labels already in ``meta.security`` are kept; other ``meta`` elements too. The position is
    fixed so that every writer serialises a labelled resource to the same bytes.
    """
    if not labels:
        return resource
    meta = dict(resource.get("meta") or {})
    present = {(c.get("system"), c.get("code")) for c in meta.get("security") or [] if isinstance(c, dict)}
    meta["security"] = list(meta.get("security") or []) + [
        c for c in labels.codings() if (c["system"], c["code"]) not in present
    ]
    out: dict[str, Any] = {"resourceType": resource["resourceType"], "meta": meta}
    out.update((k, v) for k, v in resource.items() if k not in ("resourceType", "meta"))
    return out


def carries_labels(held: Mapping[str, Any], wanted: Mapping[str, Any]) -> bool:
    """Whether ``held`` (a server's copy) carries every ``meta.security`` label of ``wanted`` (ours).

    Servers may add labels of their own, and some (HAPI) keep labels across updates, so a
    superset counts: only a missing label needs a write.
    """
    return _label_keys(wanted) <= _label_keys(held)


def _label_keys(resource: Mapping[str, Any]) -> set[tuple[Any, Any]]:
    meta = resource.get("meta")
    security = meta.get("security") if isinstance(meta, dict) else None
    return {(c.get("system"), c.get("code")) for c in security or [] if isinstance(c, dict)}
