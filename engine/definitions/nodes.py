"""Workflow definitions: the JSON format as pydantic models.

A definition round-trips JSON -> model -> JSON (``Definition.model_validate_json`` /
``Definition.to_json``). Structural checks (unknown keys, types, ranges) live in the models;
graph and expression checks live in :mod:`engine.definitions.validation`.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, model_validator

NAME_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}$"
NODE_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"
IDENT_PATTERN = r"^[a-z_][a-z0-9_]{0,63}$"


class RecordLevel(StrEnum):
    """How much an activity record keeps of a step."""

    FULL = "full"  # data sent and data received
    RESPONSES = "responses"  # data received only
    METADATA = "metadata"  # neither: node, transition, attempt, worker, times, error


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RetryPolicy(_Strict):
    """How often, and how far apart, a failing step is tried."""

    max_attempts: int = Field(3, ge=1, le=25, description="Attempts in all, the first included.")
    backoff_seconds: float = Field(1.0, ge=0, le=3600, description="Delay before the second attempt.")
    backoff_rate: float = Field(2.0, ge=1.0, le=10.0, description="Factor applied to the delay each attempt.")
    max_backoff_seconds: float = Field(300.0, ge=0, le=86400, description="Upper bound on one delay.")

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1`` after attempt ``attempt`` failed."""
        return min(self.backoff_seconds * self.backoff_rate ** max(attempt - 1, 0), self.max_backoff_seconds)


class RateLimit(_Strict):
    """At most ``burst`` calls in any window of ``burst / per_second`` seconds, per value of ``key``."""

    key: str = Field(min_length=1, description="Expression naming the bucket (a string), e.g. \"'brokerage'\"; "
                                               "every node and workflow naming the same value shares it.")
    per_second: float = Field(gt=0, le=100000, description="Calls a second on average.")
    burst: int | None = Field(None, ge=1, le=100000, description="The most calls at once (and in any window of "
                                                                 "burst/per_second seconds); default: per_second "
                                                                 "rounded up.")
    cost: str | None = Field(None, min_length=1, description="Expression giving how many calls one step counts "
                                                             "for (an integer, e.g. the orders it sends); default 1.")

    @property
    def capacity(self) -> int:
        """``burst``, or ``per_second`` rounded up when it is not given."""
        return self.burst if self.burst is not None else max(1, math.ceil(self.per_second))


class ConcurrencyLimit(_Strict):
    """At most ``max`` instances at once inside the node (or the nodes of ``group``) per value of ``key``."""

    key: str = Field(min_length=1, description="Expression naming the pool (a string), e.g. data.household_id.")
    max: int = Field(ge=1, le=100000, description="Instances at once per key value.")
    group: str | None = Field(None, pattern=IDENT_PATTERN, description="Nodes naming the same group share one "
                                                                       "pool: a slot is held from the first of them "
                                                                       "until the instance leaves them all.")


class Limits(_Strict):
    """The shared limits of a step node, held across every worker (Redis)."""

    rate: RateLimit | None = None
    concurrency: ConcurrencyLimit | None = None


class GatherLimits(_Strict):
    """The shared limit of a gather node's batch step: a rate (the batch step is one call for all its members).

    Its ``key`` and ``cost`` are evaluated once per batch step, over ``params`` and ``data``:
    ``data.members`` (the members' contributions, in order of arrival) and ``data.batch``
    (``id``, ``name``, ``group``, ``size``). There is no concurrency limit here: one batch
    step is one call for all its members (limit their concurrency at a service node before it).
    """

    rate: RateLimit | None = None


#: What a gather node's limit expressions may read under ``data`` (see :class:`GatherLimits`).
GATHER_LIMIT_DATA = ("members", "batch")


@dataclass(frozen=True)
class Edge:
    """One edge leaving a node: where it is in the file, what it is called, and where it leads."""

    pointer: str  # JSON pointer suffix under the node, e.g. "/transitions/ok"
    label: str
    target: Any  # a node name (any JSON value while a raw file is being checked)


@dataclass(frozen=True)
class ExpressionSource:
    """One expression of a node: where it is, its source, and whether it is a template of expressions."""

    pointer: str
    source: Any
    template: bool = False


class NodeBase(_Strict):
    """What every node type says about itself: its edges, its expressions, whether it ends.

    The ``raw_*`` class methods read a node leniently from raw JSON (validation reports every
    problem of a file, before the models accept it); the instance methods read a valid node.
    Adding a node type: a subclass here, listed in ``NODE_CLASSES``, and its handling in
    :func:`engine.runtime.outcomes.resolve`.
    """

    #: True for a node that ends the instance (a terminal).
    ends: ClassVar[bool] = False
    #: ``"stop"``: a shadow instance ends here, succeeded, before this node runs (engine.definitions.shadow).
    shadow: Literal["stop"] | None = Field(None, description="\"stop\": a shadow instance ends here, before "
                                                             "this node runs.")
    #: ``"external"``: this node acts outside the run (a brokerage, a review queue...); every path from
    #: start to it must pass a shadow stop (checked on publish).
    effect: Literal["external"] | None = Field(None, description="\"external\": this node acts outside the run; "
                                                                 "a shadow must stop before it.")
    #: A Mermaid state annotation ("choice" draws a diamond), if any.
    diagram_shape: ClassVar[str | None] = None

    @classmethod
    def raw_edges(cls, raw: dict[str, Any]) -> Iterator[Edge]:
        """The edges of the raw node ``raw``, as far as they can be read."""
        return iter(())

    @classmethod
    def raw_broken(cls, raw: dict[str, Any]) -> bool:
        """True when ``raw``'s edges are missing or malformed (the model reports why)."""
        return False

    @classmethod
    def raw_expressions(cls, raw: dict[str, Any]) -> Iterator[ExpressionSource]:
        """The expressions (and templates) of the raw node ``raw``, as far as they can be read."""
        return iter(())

    def edges(self) -> list[Edge]:
        """The edges leaving this node, in the order of the file."""
        return list(type(self).raw_edges(self.model_dump(mode="json")))

    def label(self) -> str | None:
        """What the node does, in a few words, for a diagram (None: its name says it)."""
        return None


class StepNode(NodeBase):
    """A node whose step is work done by a worker (a message per step); its outcome is a transition."""

    description: str | None = None
    input: Any = Field(default_factory=dict, description="Expressions (strings) and literals.")
    transitions: dict[Annotated[str, Field(pattern=IDENT_PATTERN)], str] = Field(min_length=1)
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(max_attempts=1))
    timeout_seconds: float = Field(300.0, gt=0, le=86400)
    record: RecordLevel | None = None
    limits: Limits | None = Field(None, description="Shared rate and concurrency limits: a step over them waits "
                                                    "(status waiting) without holding a worker.")

    @classmethod
    def raw_edges(cls, raw: dict[str, Any]) -> Iterator[Edge]:
        """One edge per transition."""
        if isinstance(raw.get("transitions"), dict):
            for name, target in raw["transitions"].items():
                yield Edge(f"/transitions/{escape_pointer(name)}", str(name), target)

    @classmethod
    def raw_broken(cls, raw: dict[str, Any]) -> bool:
        """No transitions, or not an object."""
        transitions = raw.get("transitions")
        return not isinstance(transitions, dict) or not transitions

    @classmethod
    def raw_expressions(cls, raw: dict[str, Any]) -> Iterator[ExpressionSource]:
        """The input template, and the keys of its limits."""
        if "input" in raw:
            yield ExpressionSource("/input", raw["input"], template=True)
        limits = raw.get("limits")
        for kind in ("rate", "concurrency"):
            limit = limits.get(kind) if isinstance(limits, dict) else None
            for field in ("key", "cost"):
                if isinstance(limit, dict) and isinstance(limit.get(field), str) and limit[field]:
                    yield ExpressionSource(f"/limits/{kind}/{field}", limit[field])


class ServiceNode(StepNode):
    """Call ``action`` of ``service`` (a Celery task on the service's queue)."""

    type: Literal["service"]
    service: str = Field(pattern=IDENT_PATTERN)
    action: str = Field(pattern=IDENT_PATTERN)

    def label(self) -> str:
        """service.action"""
        return f"{self.service}.{self.action}"


class HttpNode(StepNode):
    """POST the input as JSON to ``url``; the answer is ``{"transition": ..., "data": {...}}``."""

    type: Literal["http"]
    url: str = Field(pattern=r"^https?://", max_length=2048)
    method: Literal["POST", "PUT"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)

    def label(self) -> str:
        """METHOD url"""
        return f"{self.method} {self.url}"


class WaitNode(NodeBase):
    """Park the instance until ``until`` (an expression giving a timestamp), then go to ``next``."""

    type: Literal["wait"]
    description: str | None = None
    until: str = Field(min_length=1)
    next: str

    @classmethod
    def raw_edges(cls, raw: dict[str, Any]) -> Iterator[Edge]:
        """The edge to ``next``."""
        if "next" in raw:
            yield Edge("/next", f"until {raw.get('until')}", raw["next"])

    @classmethod
    def raw_broken(cls, raw: dict[str, Any]) -> bool:
        """No ``next``."""
        return not isinstance(raw.get("next"), str)

    @classmethod
    def raw_expressions(cls, raw: dict[str, Any]) -> Iterator[ExpressionSource]:
        """The ``until`` expression."""
        if isinstance(raw.get("until"), str) and raw["until"]:
            yield ExpressionSource("/until", raw["until"])


#: A role name an await node's signal may require (``pm``, ``operator``...).
ROLE_PATTERN = r"^[a-z][a-z0-9_-]{0,31}$"
#: A data field a signal requires (a top-level key of the signal's data).
FIELD_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$"


class SignalSpec(_Strict):
    """One signal of an await node in full: where it leads, who may send it, what data it needs.

    The short form ``"approve": "check"`` is ``{"next": "check"}``: any principal may send it.
    """

    next: str = Field(description="The node the signal leads to.")
    roles: list[Annotated[str, Field(pattern=ROLE_PATTERN)]] | None = Field(
        None, min_length=1, max_length=20,
        description="Who may send it: a principal holding one of these roles (absent: anyone).")
    requires: list[Annotated[str, Field(pattern=FIELD_PATTERN)]] | None = Field(
        None, max_length=50,
        description="Fields of the signal's data that must be present and non-empty.")


def _signal_form(value: Any) -> str:
    """Which form a signal of an await node is written in: ``node`` (a node name) or ``full`` (an object)."""
    return "full" if isinstance(value, dict | SignalSpec) else "node"


#: A signal of an await node: the node it leads to (anyone may send it), or its full form.
#: The tags name the two forms in pydantic's error locations (dropped from JSON pointers).
SignalTarget = Annotated[Annotated[str, Tag("node")] | Annotated[SignalSpec, Tag("full")],
                         Discriminator(_signal_form)]
SIGNAL_FORMS = ("node", "full")


class Quorum(_Strict):
    """An await node's quorum: ``signal`` moves the instance on only once ``count`` distinct principals sent it.

    ``count`` is a number, or an expression evaluated when the first such signal arrives (the
    await node's own context entry left out, so that no signal data can change it).
    """

    signal: str = Field(pattern=IDENT_PATTERN, description="The signal counted (one of the node's signals).")
    count: Annotated[int, Field(ge=1, le=100)] | Annotated[str, Field(min_length=1)] = Field(
        description="How many distinct principals: a number, or an expression giving one (e.g. "
                    "\"context.propose.order_value > params.four_eyes_over ? 2 : 1\").")


class AwaitNode(NodeBase):
    """Park the instance until one of the named ``signals`` arrives (``Engine.signal``), then go where it maps.

    Each signal maps to a node (``"approve": "check"``: anyone may send it) or to a
    :class:`SignalSpec` naming the roles allowed to send it and the data fields it requires.
    ``quorum`` makes one signal count distinct principals before it moves the instance on.
    ``timeout`` (an expression giving a timestamp) and ``on_timeout`` (a node) come together: when
    no signal arrived by then, the instance goes to ``on_timeout`` instead; a signal after that
    time is refused. What a signal brings is written into the context under this node's name
    (see docs/signals.md for its shape).
    """

    type: Literal["await"]
    description: str | None = None
    signals: dict[Annotated[str, Field(pattern=IDENT_PATTERN)], SignalTarget] = Field(
        min_length=1, max_length=50, description="Signal name -> the node it leads to, or its full form.")
    quorum: Quorum | None = Field(None, description="A signal that needs several distinct principals.")
    timeout: str | None = Field(None, min_length=1, description="When the wait for a signal ends (a timestamp).")
    on_timeout: str | None = Field(None, description="Where the instance goes when the timeout passes first.")

    @model_validator(mode="after")
    def _timeout_pair(self) -> AwaitNode:
        """``timeout`` and ``on_timeout`` come together or not at all."""
        if (self.timeout is None) != (self.on_timeout is None):
            missing = "on_timeout" if self.on_timeout is None else "timeout"
            raise ValueError(f"timeout and on_timeout go together: add {missing!r} or drop the other")
        return self

    def spec(self, name: str) -> SignalSpec:
        """Signal ``name`` in its full form (KeyError when the node has no such signal)."""
        found = self.signals[name]
        return SignalSpec(next=found) if isinstance(found, str) else found

    def target(self, name: str) -> str:
        """The node signal ``name`` leads to."""
        return self.spec(name).next

    @staticmethod
    def raw_target(value: Any) -> tuple[str, Any]:
        """(pointer suffix, target) of a raw signal value: a node name, or an object's ``next``."""
        if isinstance(value, dict):
            return "/next", value.get("next")
        return "", value

    @classmethod
    def raw_edges(cls, raw: dict[str, Any]) -> Iterator[Edge]:
        """One edge per signal, then the timeout's."""
        if isinstance(raw.get("signals"), dict):
            for name, value in raw["signals"].items():
                suffix, target = cls.raw_target(value)
                if target is not None:
                    yield Edge(f"/signals/{escape_pointer(name)}{suffix}", f"signal {name}", target)
        if raw.get("on_timeout") is not None:
            yield Edge("/on_timeout", f"timeout {raw.get('timeout')}", raw["on_timeout"])

    @classmethod
    def raw_broken(cls, raw: dict[str, Any]) -> bool:
        """No signals, not an object, or a signal without a node to go to."""
        signals = raw.get("signals")
        if not isinstance(signals, dict) or not signals:
            return True
        return any(not isinstance(cls.raw_target(value)[1], str) for value in signals.values())

    @classmethod
    def raw_expressions(cls, raw: dict[str, Any]) -> Iterator[ExpressionSource]:
        """The ``timeout`` expression and the quorum's ``count`` (when an expression)."""
        if isinstance(raw.get("timeout"), str) and raw["timeout"]:
            yield ExpressionSource("/timeout", raw["timeout"])
        quorum = raw.get("quorum")
        if isinstance(quorum, dict) and isinstance(quorum.get("count"), str) and quorum["count"]:
            yield ExpressionSource("/quorum/count", quorum["count"])

    def label(self) -> str:
        """await <signals>"""
        return "await " + ", ".join(self.signals)


class GatherNode(NodeBase):
    """A rendezvous of many instances: each contributes its ``input`` to the batch named by ``group``.

    The batch closes once: at the ``close`` time (an expression giving a timestamp, evaluated by
    each arriving instance; the earliest wins) or, with ``close_early``, as soon as no live
    instance of its members' runs can still arrive. Then one batch step calls ``action`` of
    ``service`` with every contribution, and each member goes on with the transition (and data)
    the action answered for it. An instance arriving after its group's batch closed takes the
    ``late`` node when there is one, else opens the group's next batch. ``retry`` and
    ``timeout_seconds`` apply to the batch step.
    """

    type: Literal["gather"]
    description: str | None = None
    service: str = Field(pattern=IDENT_PATTERN)
    action: str = Field(pattern=IDENT_PATTERN)
    input: Any = Field(default_factory=dict, description="Expressions (strings) and literals: the contribution.")
    transitions: dict[Annotated[str, Field(pattern=IDENT_PATTERN)], str] = Field(min_length=1)
    retry: RetryPolicy = Field(default_factory=lambda: RetryPolicy(max_attempts=1))
    timeout_seconds: float = Field(300.0, gt=0, le=86400)
    record: RecordLevel | None = None
    group: str = Field(min_length=1, description="Expression naming the batch (a string), e.g. the run.")
    close: str = Field(min_length=1, description="Expression giving the timestamp the batch closes at.")
    close_early: bool = Field(True, description="Close before then, once no live instance of the members' runs "
                                                "can still arrive.")
    late: str | None = Field(None, description="Where an instance goes when its group's batch has closed "
                                               "(absent: it opens the group's next batch).")
    limits: GatherLimits | None = Field(None, description="A shared rate limit on the batch step: a batch over it "
                                                          "waits (closed, its step parked) without holding a worker.")

    @classmethod
    def raw_edges(cls, raw: dict[str, Any]) -> Iterator[Edge]:
        """One edge per transition (as a step node's), then ``late``."""
        yield from StepNode.raw_edges(raw)
        if raw.get("late") is not None:
            yield Edge("/late", "late", raw["late"])

    @classmethod
    def raw_broken(cls, raw: dict[str, Any]) -> bool:
        """No transitions, or not an object (as a step node)."""
        return StepNode.raw_broken(raw)

    @classmethod
    def raw_expressions(cls, raw: dict[str, Any]) -> Iterator[ExpressionSource]:
        """The input template (as a step node's), ``group`` and ``close``."""
        yield from StepNode.raw_expressions(raw)
        for key in ("group", "close"):
            if isinstance(raw.get(key), str) and raw[key]:
                yield ExpressionSource(f"/{key}", raw[key])

    def label(self) -> str:
        """gather by <group> into service.action"""
        return f"gather by {self.group} into {self.service}.{self.action}"


class Choice(_Strict):
    """One branch of a choice node: go to ``next`` when ``when`` is true."""

    when: str = Field(min_length=1)
    next: str


class ChoiceNode(NodeBase):
    """Pick the next node from conditions over the context; applied inline, no broker hop."""

    diagram_shape: ClassVar[str | None] = "choice"
    type: Literal["choice"]
    description: str | None = None
    choices: list[Choice] = Field(min_length=1, max_length=100)
    default: str

    @classmethod
    def raw_edges(cls, raw: dict[str, Any]) -> Iterator[Edge]:
        """One edge per choice, then the default."""
        if isinstance(raw.get("choices"), list):
            for index, choice in enumerate(raw["choices"]):
                if isinstance(choice, dict) and "next" in choice:
                    yield Edge(f"/choices/{index}/next", str(choice.get("when")), choice["next"])
        if "default" in raw:
            yield Edge("/default", "default", raw["default"])

    @classmethod
    def raw_broken(cls, raw: dict[str, Any]) -> bool:
        """No default, or no choices."""
        choices = raw.get("choices")
        return not isinstance(raw.get("default"), str) or not isinstance(choices, list) or not choices

    @classmethod
    def raw_expressions(cls, raw: dict[str, Any]) -> Iterator[ExpressionSource]:
        """Each choice's ``when``."""
        if isinstance(raw.get("choices"), list):
            for index, choice in enumerate(raw["choices"]):
                if isinstance(choice, dict) and isinstance(choice.get("when"), str) and choice["when"]:
                    yield ExpressionSource(f"/choices/{index}/when", choice["when"])


class TerminalStatus(StrEnum):
    """How a terminal node ends an instance."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"


class TerminalNode(NodeBase):
    """End the instance with ``status``; ``result`` (expressions) is stored on the instance."""

    ends: ClassVar[bool] = True
    type: Literal["terminal"]
    description: str | None = None
    status: TerminalStatus
    result: Any = None

    @classmethod
    def raw_expressions(cls, raw: dict[str, Any]) -> Iterator[ExpressionSource]:
        """The result template."""
        if raw.get("result") is not None:
            yield ExpressionSource("/result", raw["result"], template=True)


#: Every node type, in the order the format documents them.
NODE_CLASSES: tuple[type[NodeBase], ...] = (ServiceNode, HttpNode, WaitNode, AwaitNode, GatherNode, ChoiceNode,
                                             TerminalNode)
#: The node class of each ``type`` value.
NODE_TYPES: dict[str, type[NodeBase]] = {get_args(c.model_fields["type"].annotation)[0]: c for c in NODE_CLASSES}


def raw_node_class(node: Any) -> type[NodeBase] | None:
    """The class of a raw (unvalidated) node by its ``type``; None when it is not a node of a known
    type (not an object, no type, or a type that is not a string: reported by the validation)."""
    kind = node.get("type") if isinstance(node, dict) else None
    return NODE_TYPES.get(kind) if isinstance(kind, str) else None
Node = Annotated[ServiceNode | HttpNode | WaitNode | AwaitNode | GatherNode | ChoiceNode | TerminalNode,
                 Field(discriminator="type")]


def escape_pointer(key: Any) -> str:
    """``key`` as one JSON pointer segment (RFC 6901: ``~`` and ``/`` escaped)."""
    return str(key).replace("~", "~0").replace("/", "~1")


class Definition(_Strict):
    """One version of a business process: a JSON state machine."""

    name: str = Field(pattern=NAME_PATTERN)
    version: int | None = Field(None, ge=1, description="Assigned on publish; a file may pin it.")
    description: str = ""
    initial_data: dict[str, Any] = Field(
        default_factory=lambda: {"type": "object"}, description="JSON Schema of the required input."
    )
    parameters: dict[str, Any] = Field(default_factory=dict, description="Constants a version may tweak.")
    record: RecordLevel = RecordLevel.FULL
    retention_days: float | None = Field(None, gt=0, le=3650, description="TTL of finished instances.")
    drop_on_success: list[Annotated[str, Field(pattern=NODE_PATTERN)]] = Field(
        default_factory=list, max_length=500,
        description="Nodes whose context entries are deleted when an instance succeeds (big intermediate "
                    "documents; a failed instance keeps them for inspection and retry).")
    drop_after_use: list[Annotated[str, Field(pattern=NODE_PATTERN)]] = Field(
        default_factory=list, max_length=500,
        description="Nodes whose context entries are deleted as soon as no node the instance can still reach "
                    "reads them (big documents only the next steps read; nothing keeps them for inspection).")
    start: str
    nodes: dict[Annotated[str, Field(pattern=NODE_PATTERN)], Node] = Field(min_length=1, max_length=500)

    @model_validator(mode="before")
    @classmethod
    def _drop_schema_reference(cls, data: Any) -> Any:
        """A file may name its JSON Schema for editors (``"$schema": "<url>"``); that is not content."""
        if isinstance(data, dict) and isinstance(data.get("$schema"), str):
            return {key: value for key, value in data.items() if key != "$schema"}
        return data

    def node(self, name: str) -> NodeBase:
        """The node called ``name`` (KeyError if there is none)."""
        return self.nodes[name]

    def step(self, name: str) -> StepNode:
        """The step node called ``name`` (TypeError if that node is not a step)."""
        node = self.nodes[name]
        if not isinstance(node, StepNode):
            raise TypeError(f"node {name!r} of {self.name} is a {type(node).__name__}, not a step")
        return node

    def record_level(self, node_name: str) -> RecordLevel:
        """The record level that applies to a step of ``node_name``."""
        node = self.nodes[node_name]
        return getattr(node, "record", None) or self.record

    def to_json(self, *, indent: int | None = 2) -> str:
        """The definition as JSON, without defaults a file did not need to spell out."""
        return json.dumps(self.model_dump(mode="json", exclude_none=True), indent=indent)

    def fingerprint(self) -> str:
        """A stable digest of the content (the version number excluded)."""
        body = self.model_dump(mode="json", exclude={"version"})
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
