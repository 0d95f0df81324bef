"""Writing score Observations in the way a server supports, and believing only what it confirms.

Four ways, chosen from the CapabilityStatement (``sync --write-mode auto``) or forced:

- ``transaction``: a transaction Bundle of conditional updates on our identifier (HAPI, most
  JPA servers);
- ``batch``: the same entries in a batch Bundle (servers without transactions);
- ``single``: one conditional update (``PUT Observation?identifier=...``) per Observation;
- ``search``: where conditional update is missing, a search by our identifier, then a create
  (``POST``) or an update by id (``PUT Observation/id``).

Every answer is verified: a Bundle answer must be the matching ``*-response`` with one entry per
entry sent, and only entries whose ``response.status`` is 2xx (and carry no error outcome) count
as written; a single write must answer 200/201 with an Observation carrying our identifier (when
it returns a body). A batch that failed for a transient reason (timeout, 5xx after retries,
an answer we cannot trust) fails as a whole: it is not split. Splitting into one write per
entry is only for isolating the entry a server rejected with a 4xx.

The ``search`` mode has one race: two runs writing the same new Observation at the same time
can both find nothing and both create it. The next run's search then finds two: it updates the
first and deletes the others, so the server converges on one Observation per response.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from typing import Any, Literal

from .._ids import IDENTIFIER_SYSTEM
from ..errors import AllianceFhirError, FhirServerError, FhirTransportError, UnexpectedResponse, summarise_outcome
from ..fhirclient._retry import TRANSIENT_STATUSES, PermanentTransportError
from ..fhirclient.client import FhirClient
from ..fhirclient.config import WriteMode

__all__ = ["PendingWrite", "WritePlan", "Writer", "choose_write_mode", "server_capabilities"]

logger = logging.getLogger(__name__)
_PERMANENT_RETRYABLE = frozenset({408, 429})
_STATUS_2XX = re.compile(r"2\d\d(\s|$)")  # "201", "201 Created"


@dataclass
class PendingWrite:
    """One Observation to write for one response version."""

    response_id: str
    version_id: str
    identifier: str
    observation: dict[str, Any]
    outcome: Literal["written", "retracted"] = "written"  # what the ledger records once it landed


Written = tuple[PendingWrite, str | None]  # the write, and the failure reason (None when it landed)


@dataclass(frozen=True, slots=True)
class WritePlan:
    """The write mode a server gets, and why (``check`` prints both)."""

    mode: str
    reason: str


@dataclass(frozen=True, slots=True)
class Capabilities:
    """The parts of a CapabilityStatement that decide how we write."""

    transaction: bool
    batch: bool
    conditional_update: bool


def server_capabilities(statement: dict[str, Any]) -> Capabilities:
    """Read transaction/batch support and Observation conditional update, tolerating odd shapes."""
    rest: dict[str, Any] = next((r for r in _dicts(statement.get("rest")) if r.get("mode") == "server"), {})
    interactions = {i.get("code") for i in _dicts(rest.get("interaction"))}
    observation = next((r for r in _dicts(rest.get("resource")) if r.get("type") == "Observation"), {})
    return Capabilities(
        "transaction" in interactions, "batch" in interactions, observation.get("conditionalUpdate") is True
    )


def choose_write_mode(statement: dict[str, Any], requested: WriteMode = "auto") -> WritePlan:
    """The write mode for a server: ``requested`` unless ``auto``, else the best it advertises."""
    caps = server_capabilities(statement)
    cond = "conditional update on Observation"
    if requested == "auto":
        if caps.transaction and caps.conditional_update:
            return WritePlan("transaction", f"the server offers transactions and {cond}")
        if caps.batch and caps.conditional_update:
            return WritePlan("batch", f"the server offers batches (no transactions) and {cond}")
        if caps.conditional_update:
            return WritePlan("single", f"the server offers {cond} but neither transactions nor batches")
        return WritePlan(
            "search", f"the server does not offer {cond}: search by identifier, then create or update by id"
        )
    advertised = {
        "transaction": caps.transaction and caps.conditional_update,
        "batch": caps.batch and caps.conditional_update,
        "single": caps.conditional_update,
        "search": True,
    }[requested]
    if requested == "single" and not caps.conditional_update:
        return WritePlan(
            "search", f"--write-mode single, but the server does not offer {cond}: search, then create or update by id"
        )
    note = "" if advertised else " (the server does not advertise it)"
    return WritePlan(requested, f"--write-mode {requested}{note}")


class Writer:
    """Writes batches of Observations in one mode; thread-safe (HTTP only).

    Once a write has failed for a transient reason after its retries (the server is down,
    throttling past the retry budget, timing out), the writes still to come in this run fail at
    once instead of each spending its own budget: a run's writes cost one budget, not one per
    batch or per Observation. The next run tries them all again.
    """

    def __init__(self, client: FhirClient, mode: str) -> None:
        self.client = client
        self.mode = mode
        self.gave_up: str | None = None  # why the server was given up on in this run

    def write(self, batch: list[PendingWrite]) -> list[Written]:
        """Write a batch; one (write, reason-or-None) per write, in order."""
        if self.gave_up is not None:
            return [(write, f"not attempted: an earlier write of this run failed ({self.gave_up})") for write in batch]
        if self.mode in ("transaction", "batch"):
            return self._bundle(batch)
        return [(write, self._one(write)) for write in batch]

    def _give_up_on(self, exc: AllianceFhirError) -> None:
        transient = (isinstance(exc, FhirTransportError) and not isinstance(exc, PermanentTransportError)) or (
            isinstance(exc, FhirServerError)
            and not isinstance(exc, UnexpectedResponse)
            and (exc.status in TRANSIENT_STATUSES or exc.status >= 500)
        )
        if transient and self.gave_up is None:
            self.gave_up = str(exc)

    # ------------------------------------------------------------ bundles

    def _bundle(self, batch: list[PendingWrite]) -> list[Written]:
        bundle = {"resourceType": "Bundle", "type": self.mode, "entry": [_conditional_entry(w) for w in batch]}
        try:
            answer = self.client.transaction(bundle, idempotent=True)
        except FhirServerError as exc:
            if len(batch) > 1 and _isolating(exc):
                logger.warning(
                    "%s of %d Observations refused (%s); writing them one by one", self.mode, len(batch), exc
                )
                return [result for write in batch for result in self._bundle([write])]
            self._give_up_on(exc)
            return [(write, str(exc)) for write in batch]
        except AllianceFhirError as exc:  # transport: the whole batch failed for a transient reason
            self._give_up_on(exc)
            return [(write, str(exc)) for write in batch]
        problem = _bundle_problem(answer, self.mode, len(batch))
        if problem:
            return [(write, f"POST {self.client.base_url}: {problem}") for write in batch]
        return [(write, _entry_problem(entry)) for write, entry in zip(batch, answer["entry"], strict=True)]

    # ------------------------------------------------------------ one by one

    def _one(self, write: PendingWrite) -> str | None:
        if self.gave_up is not None:
            return f"not attempted: an earlier write of this run failed ({self.gave_up})"
        try:
            if self.mode == "single":
                response = self.client.conditional_update("Observation", _criteria(write), write.observation)
                return _observation_problem(response.status_code, _body(response), write, "PUT Observation?identifier")
            return self._search_then_write(write)
        except AllianceFhirError as exc:
            self._give_up_on(exc)
            return str(exc)

    def _search_then_write(self, write: PendingWrite) -> str | None:
        found = [
            r
            for r in self.client.search("Observation", {**_criteria(write), "_count": "10"})
            if r.get("resourceType") == "Observation" and isinstance(r.get("id"), str)
        ]
        if not found:
            body = {k: v for k, v in write.observation.items() if k != "id"}
            response = self.client.request("POST", "Observation", json=body, idempotent=False)
            return _observation_problem(response.status_code, _body(response), write, "POST Observation")
        keep, *extra = found
        body = {**write.observation, "id": keep["id"]}
        response = self.client.request("PUT", f"Observation/{keep['id']}", json=body)
        problem = _observation_problem(response.status_code, _body(response), write, "PUT Observation/id")
        for duplicate in extra:  # two runs raced on a create: converge on one Observation
            logger.warning("Observation %s duplicates %s (same identifier): deleting it", duplicate["id"], keep["id"])
            self.client.request("DELETE", f"Observation/{duplicate['id']}")
        return problem


def _dicts(value: Any) -> list[dict[str, Any]]:
    return [v for v in value if isinstance(v, dict)] if isinstance(value, list) else []


def _criteria(write: PendingWrite) -> dict[str, str]:
    return {"identifier": f"{IDENTIFIER_SYSTEM}|{write.identifier}"}


def _conditional_entry(write: PendingWrite) -> dict[str, Any]:
    return {
        "resource": write.observation,
        "request": {"method": "PUT", "url": f"Observation?identifier={IDENTIFIER_SYSTEM}|{write.identifier}"},
    }


def _isolating(exc: FhirServerError) -> bool:
    """A 4xx refusal (not 408/429, not an untrustworthy answer) is about an entry: split to find it."""
    return (
        400 <= exc.status < 500 and exc.status not in _PERMANENT_RETRYABLE and not isinstance(exc, UnexpectedResponse)
    )


def _bundle_problem(answer: dict[str, Any], mode: str, sent: int) -> str | None:
    expected = f"{mode}-response"
    if answer.get("resourceType") != "Bundle" or answer.get("type") != expected:
        what = (
            answer.get("resourceType")
            if answer.get("resourceType") != "Bundle"
            else f"Bundle of type {answer.get('type')!r}"
        )
        return f"expected a {expected} Bundle, got {what!r}" + _outcome_text(answer)
    entries = answer.get("entry")
    if not isinstance(entries, list) or len(entries) != sent or not all(isinstance(e, dict) for e in entries):
        got = len(entries) if isinstance(entries, list) else 0
        return f"the {expected} has {got} entries for {sent} sent"
    return None


def _entry_problem(entry: dict[str, Any]) -> str | None:
    response: dict[str, Any] = entry["response"] if isinstance(entry.get("response"), dict) else {}
    status = str(response.get("status", "")).strip()
    outcome = response.get("outcome") if isinstance(response.get("outcome"), dict) else None
    if not _STATUS_2XX.match(status):
        return f"the server answered this entry {status or 'with no status'!r}" + _outcome_text(outcome)
    if outcome is not None and _has_error(outcome):
        return f"the server answered this entry {status!r} with an error" + _outcome_text(outcome)
    return None


def _observation_problem(status: int, body: dict[str, Any] | None, write: PendingWrite, what: str) -> str | None:
    if status not in (200, 201):
        return f"{what}: HTTP {status}, expected 200 or 201"
    if body is None:  # return=minimal: the status is all a server owes us
        return None
    if body.get("resourceType") != "Observation":
        return f"{what}: the server answered with {body.get('resourceType')!r}, not the Observation" + _outcome_text(
            body
        )
    if not any(
        isinstance(i, dict) and i.get("system") == IDENTIFIER_SYSTEM and i.get("value") == write.identifier
        for i in _dicts(body.get("identifier"))
    ):
        return f"{what}: the Observation the server answered with does not carry our identifier"
    return None


def _body(response: Any) -> dict[str, Any] | None:
    if not response.content.strip():
        return None
    try:
        body = response.json()
    except ValueError:
        return {"resourceType": "(not JSON)"}
    return body if isinstance(body, dict) else {"resourceType": "(not a JSON object)"}


def _has_error(outcome: dict[str, Any]) -> bool:
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in outcome.get("issue") or [])


def _outcome_text(outcome: dict[str, Any] | None) -> str:
    if not outcome or not isinstance(outcome.get("issue"), list):
        return ""
    return f": {summarise_outcome(outcome)}"
