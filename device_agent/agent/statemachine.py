"""The update flow as an explicit table of (state, event) -> next state. Pure: no I/O.

::

    idle -> downloading -> verifying -> staged -> activating -> probation -> committed
                 |             |                      |             |
                 +-> failed <--+                      +-> rolled_back <-+

:class:`UpdateRecord` is what is persisted (atomically, with :data:`RECORD_VERSION`) before
every step is carried out. :data:`RESUME` says, for every state, what the agent does after a
crash or power loss in that state. :func:`step` refuses any pair not in the table and counts
transitions for the loop guard (like mender's ``MaximumStateDataStoreCount``).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from device_agent.errors import DataError

RECORD_VERSION = 1
MAX_TRANSITIONS = 40  # per update; more means a loop

IDLE = "idle"
DOWNLOADING = "downloading"
VERIFYING = "verifying"
STAGED = "staged"
ACTIVATING = "activating"
PROBATION = "probation"
COMMITTED = "committed"
ROLLED_BACK = "rolled_back"
FAILED = "failed"

STATES = (IDLE, DOWNLOADING, VERIFYING, STAGED, ACTIVATING, PROBATION, COMMITTED, ROLLED_BACK, FAILED)
RESTING = (IDLE, COMMITTED, ROLLED_BACK, FAILED)  # no update in progress
IN_PROGRESS = (DOWNLOADING, VERIFYING, STAGED, ACTIVATING, PROBATION)

# events
START = "start"  # a new target was chosen (desired state or newest release)
REVERT = "revert"  # the target is the model in the previous slot: no download
DOWNLOADED = "downloaded"
RETRY = "retry"  # transport trouble or a resume: do this state again
REDOWNLOAD = "redownload"  # the downloaded file or staged slot is gone or damaged
VERIFIED = "verified"
ACTIVATE = "activate"
SELF_TEST_PASSED = "self_test_passed"
REVERTED = "reverted"  # self-test of the previous slot passed: committed without probation
PROBATION_PASSED = "probation_passed"
SELF_TEST_FAILED = "self_test_failed"
PROBATION_FAILED = "probation_failed"
REJECTED = "rejected"  # bad data (tampered, too large, unknown format): give up on this target
ABORT = "abort"  # the desired state changed away from the target mid-update
LOOP_GUARD = "loop_guard"

TRANSITIONS: dict[tuple[str, str], str] = {}


def _add(states: tuple[str, ...], event: str, to: str) -> None:
    for s in states:
        TRANSITIONS[(s, event)] = to


_add(RESTING, START, DOWNLOADING)
_add(RESTING, REVERT, ACTIVATING)
_add((DOWNLOADING,), DOWNLOADED, VERIFYING)
_add((DOWNLOADING, VERIFYING, STAGED, ACTIVATING, PROBATION), RETRY, "")  # "" = same state
_add((VERIFYING, STAGED), REDOWNLOAD, DOWNLOADING)
_add((VERIFYING,), VERIFIED, STAGED)
_add((STAGED,), ACTIVATE, ACTIVATING)
_add((ACTIVATING,), SELF_TEST_PASSED, PROBATION)
_add((ACTIVATING,), REVERTED, COMMITTED)
_add((ACTIVATING,), SELF_TEST_FAILED, ROLLED_BACK)
_add((PROBATION,), PROBATION_PASSED, COMMITTED)
_add((PROBATION,), PROBATION_FAILED, ROLLED_BACK)
_add((DOWNLOADING, VERIFYING, STAGED), REJECTED, FAILED)
_add((DOWNLOADING, VERIFYING, STAGED), ABORT, IDLE)
_add((ACTIVATING, PROBATION), ABORT, ROLLED_BACK)
_add(IN_PROGRESS, LOOP_GUARD, FAILED)

# What the agent does after a restart finds the record in each state. The active slot on disk
# always holds a verified model (the pointer is switched only after a passed self-test), so the
# agent serves that first, then applies the rule.
RESUME: dict[str, str] = {
    IDLE: "serve the active slot; follow the desired state",
    COMMITTED: "serve the active slot; follow the desired state",
    ROLLED_BACK: "serve the active slot (the previous model); do not retry the rolled-back version",
    FAILED: "serve the active slot; do not retry the failed version until the desired state changes",
    DOWNLOADING: "download again: the updater keeps fetched chunks, so the transfer resumes",
    VERIFYING: "verify the downloaded file again; if it is gone, download again",
    STAGED: "check the staged slot's digest; activate it if intact, else download again",
    ACTIVATING: "the pointer still names the old slot: load and self-test the candidate again (counts an attempt)",
    PROBATION: "the candidate is active: self-test it on load and start probation again (counts an attempt); "
    "after max_update_attempts, roll back",
}

assert set(RESUME) == set(STATES)


class TransitionError(DataError):
    """An event that the table does not allow in the current state (a bug or a replay)."""


@dataclass
class Target:
    """The model an update is heading for."""

    name: str
    version: str
    target_path: str = ""
    length: int = 0
    manifest: dict[str, Any] = field(default_factory=dict)
    sha256: str = ""  # the signed hash: VERIFYING re-checks the file against it (also after a restart)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def from_dict(cls, data: Any) -> Optional[Target]:
        if not isinstance(data, dict):
            return None
        return cls(
            str(data.get("name", "")),
            str(data.get("version", "")),
            str(data.get("target_path", "")),
            int(data.get("length", 0)),
            dict(data.get("manifest") or {}),
            str(data.get("sha256", "")),
        )


@dataclass
class UpdateRecord:
    """The persisted update state. ``attempts`` counts resumes of the current target;
    ``transitions`` counts steps of the current update (the loop guard); ``refused`` maps
    ``name@version`` to why that version must not be tried again."""

    state: str = IDLE
    target: Optional[Target] = None
    candidate_slot: Optional[str] = None
    download_path: Optional[str] = None
    mode: str = "update"  # "update" (download, probation) or "revert" (to the previous slot)
    attempts: int = 0
    transitions: int = 0
    last_event: Optional[str] = None
    reason: str = ""
    refused: dict[str, str] = field(default_factory=dict)
    updated_at: float = 0.0
    version: int = RECORD_VERSION

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return data

    @classmethod
    def from_dict(cls, data: Any) -> UpdateRecord:
        """Raises DataError if the record is not one this agent can read."""
        if not isinstance(data, dict):
            raise DataError("update state: expected an object")
        if data.get("version") != RECORD_VERSION:
            raise DataError(
                f"update state has version {data.get('version')!r}, this agent reads {RECORD_VERSION}",
                hint="the record is ignored; the agent serves its active slot and starts from idle",
            )
        state = data.get("state")
        if state not in STATES:
            raise DataError(f"update state {state!r} is not a known state")
        return cls(
            state=state,
            target=Target.from_dict(data.get("target")),
            candidate_slot=data.get("candidate_slot"),
            download_path=data.get("download_path"),
            mode=str(data.get("mode", "update")),
            attempts=int(data.get("attempts", 0)),
            transitions=int(data.get("transitions", 0)),
            last_event=data.get("last_event"),
            reason=str(data.get("reason", "")),
            refused={str(k): str(v) for k, v in (data.get("refused") or {}).items()},
            updated_at=float(data.get("updated_at", 0.0)),
        )


def next_state(state: str, event: str) -> str:
    """The table lookup. Raises TransitionError for a pair the table does not hold."""
    to = TRANSITIONS.get((state, event))
    if to is None:
        raise TransitionError(f"event {event!r} is not allowed in state {state!r}")
    return to or state


def step(record: UpdateRecord, event: str, reason: str = "", now: float | None = None) -> UpdateRecord:
    """Apply ``event`` and return the new record (the input is not changed).

    Starting an update resets the counters; more than :data:`MAX_TRANSITIONS` steps in one
    update turns the event into LOOP_GUARD (-> failed). Raises TransitionError.
    """
    to = next_state(record.state, event)
    transitions = 0 if event in (START, REVERT) else record.transitions + 1
    if transitions > MAX_TRANSITIONS and record.state in IN_PROGRESS and event != LOOP_GUARD:
        to = next_state(record.state, LOOP_GUARD)
        event, reason = LOOP_GUARD, f"loop guard: {transitions} steps in one update (last: {event}; {reason})"
    new = UpdateRecord(
        state=to,
        target=record.target,
        candidate_slot=record.candidate_slot,
        download_path=record.download_path,
        mode=record.mode,
        attempts=0 if event in (START, REVERT) else record.attempts,
        transitions=transitions,
        last_event=event,
        reason=reason,
        refused=dict(record.refused),
        updated_at=time.time() if now is None else now,
    )
    if to in (FAILED, ROLLED_BACK) and new.target is not None:
        new.refused[new.target.key] = reason or event
    return new
