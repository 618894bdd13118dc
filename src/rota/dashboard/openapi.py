"""The OpenAPI 3 description of the dashboard's JSON API (``GET /api/openapi.json``)."""

from __future__ import annotations

import copy
from typing import Any

from rota.core.states import JobState

_STATES = [s.value for s in JobState]


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
}
_POST_ERRORS = {
    **_ERRORS,
    "403": {"$ref": "#/components/responses/Forbidden"},
}
_CSRF = {"$ref": "#/components/parameters/CSRF"}
_JOB_ID = {
    "name": "job_id",
    "in": "path",
    "required": True,
    "schema": {"type": "string"},
}

_DOCUMENT: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "rota dashboard API",
        "version": "1",
        "description": (
            "Read the fleet, jobs, periodic schedules and chart history of a rota store; "
            "retry and cancel jobs. Job states: `waiting` (a workflow step waiting for its "
            "parents), `scheduled`, `pending`, `assigned`, `running`, `retrying`, and the "
            "final `succeeded`, `dead`, `cancelled` and `upstream_failed` (a parent ended "
            "dead, cancelled or upstream_failed: the job never ran). "
            "Authenticate with `Authorization: Bearer <token>` (or the session cookie set by "
            "`POST /login`, in which case every POST also needs the `X-CSRF-Token` header "
            "from `GET /api/session`). Chart history is sampled by the dashboard process "
            "itself: it starts when the dashboard starts and is not shared between "
            "dashboard processes."
        ),
    },
    "security": [{"bearer": []}, {"session": []}],
    "paths": {
        "/api/session": {
            "get": {
                "summary": "How this client is authenticated, and its CSRF token",
                "responses": {"200": _json(_ref("Session"), "Session"), **_ERRORS},
            }
        },
        "/api/openapi.json": {
            "get": {
                "summary": "This document",
                "responses": {"200": _json({"type": "object"}, "OpenAPI 3 document"), **_ERRORS},
            }
        },
        "/api/status": {
            "get": {
                "summary": "Fleet snapshot (the same data as `rota status --json`)",
                "responses": {"200": _json(_ref("Status"), "Snapshot"), **_ERRORS},
            }
        },
        "/api/history": {
            "get": {
                "summary": "Chart history sampled every few seconds since the dashboard started",
                "parameters": [
                    {
                        "name": "since",
                        "in": "query",
                        "description": "Only samples taken after this time (unix seconds).",
                        "schema": {"type": "number"},
                    }
                ],
                "responses": {
                    "200": _json(_ref("History"), "Samples, oldest first"),
                    "400": {"$ref": "#/components/responses/BadRequest"},
                    **_ERRORS,
                },
            }
        },
        "/api/jobs": {
            "get": {
                "summary": "Jobs matching every given filter, most recently submitted first",
                "parameters": [
                    {
                        "name": "state",
                        "in": "query",
                        "schema": {"type": "string", "enum": [*_STATES, "failed", "queued"]},
                        "description": "`failed` means dead, `queued` means pending.",
                    },
                    {"name": "task", "in": "query", "schema": {"type": "string"}},
                    {"name": "queue", "in": "query", "schema": {"type": "string"}},
                    {
                        "name": "node",
                        "in": "query",
                        "schema": {"type": "string"},
                        "description": "Node id.",
                    },
                    {
                        "name": "limit",
                        "in": "query",
                        "schema": {
                            "type": "integer",
                            "minimum": 1,
                            "maximum": 1000,
                            "default": 100,
                        },
                    },
                ],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "jobs": {"type": "array", "items": _ref("JobSummary")},
                                "limit": {"type": "integer"},
                            },
                        },
                        "Jobs",
                    ),
                    "400": {"$ref": "#/components/responses/BadRequest"},
                    **_ERRORS,
                },
            }
        },
        "/api/jobs/retry-dead": {
            "post": {
                "summary": "Send dead jobs back to pending with fresh attempts",
                "description": "All dead jobs (optionally of one queue/task), or the given ids.",
                "parameters": [_CSRF],
                "requestBody": {
                    "required": False,
                    "content": {
                        "application/json": {
                            "schema": {
                                "type": "object",
                                "properties": {
                                    "ids": {"type": "array", "items": {"type": "string"}},
                                    "queue": {"type": "string"},
                                    "task": {"type": "string"},
                                },
                            }
                        }
                    },
                },
                "responses": {
                    "200": _json(
                        {"type": "object", "properties": {"retried": {"type": "integer"}}},
                        "How many jobs went back to pending",
                    ),
                    "400": {"$ref": "#/components/responses/BadRequest"},
                    **_POST_ERRORS,
                },
            }
        },
        "/api/jobs/{job_id}": {
            "get": {
                "summary": "One job: arguments, attempts, timings, node, error, traceback, parents",
                "parameters": [_JOB_ID],
                "responses": {
                    "200": _json(_ref("Job"), "The job"),
                    "404": {"$ref": "#/components/responses/NotFound"},
                    **_ERRORS,
                },
            }
        },
        "/api/jobs/{job_id}/retry": {
            "post": {
                "summary": "Send a dead job back to pending with fresh attempts",
                "parameters": [_JOB_ID, _CSRF],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {"retried": {"type": "integer"}, "job": _ref("Job")},
                        },
                        "Retried",
                    ),
                    "404": {"$ref": "#/components/responses/NotFound"},
                    "409": _json(_ref("Error"), "The job is not dead"),
                    **_POST_ERRORS,
                },
            }
        },
        "/api/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job (a running one is stopped by its node)",
                "parameters": [_JOB_ID, _CSRF],
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "id": {"type": "string"},
                                "state": {"type": "string", "enum": _STATES},
                            },
                        },
                        "The job's state after the call (final jobs are left as they are)",
                    ),
                    "404": {"$ref": "#/components/responses/NotFound"},
                    **_POST_ERRORS,
                },
            }
        },
        "/api/schedules": {
            "get": {
                "summary": "Periodic schedules stored by `rota worker` / `rota scheduler APP`, "
                "with their last and next ticks (the same data as `rota schedules`)",
                "responses": {
                    "200": _json(
                        {
                            "type": "object",
                            "properties": {
                                "schedules": {"type": "array", "items": _ref("Schedule")}
                            },
                        },
                        "Schedules, ordered by name",
                    ),
                    **_ERRORS,
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics, read from the store at each scrape",
                "description": "Public when the dashboard runs with `--metrics-public`.",
                "responses": {
                    "200": {
                        "description": "Prometheus text format",
                        "content": {"text/plain": {"schema": {"type": "string"}}},
                    },
                    **_ERRORS,
                },
            }
        },
    },
    "components": {
        "securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "session": {"type": "apiKey", "in": "cookie", "name": "rota_session"},
        },
        "parameters": {
            "CSRF": {
                "name": "X-CSRF-Token",
                "in": "header",
                "required": False,
                "description": "Required with a session cookie or without a token (open "
                "mode); not needed with a bearer token. Read it from `GET /api/session`.",
                "schema": {"type": "string"},
            }
        },
        "responses": {
            "BadRequest": _json(_ref("Error"), "Bad parameters"),
            "Unauthorized": _json(_ref("Error"), "No or wrong credentials"),
            "Forbidden": _json(_ref("Error"), "Missing CSRF token, or a cross-origin request"),
            "NotFound": _json(_ref("Error"), "No such job"),
        },
        "schemas": {
            "Error": {"type": "object", "properties": {"error": {"type": "string"}}},
            "Session": {
                "type": "object",
                "properties": {
                    "auth": {"type": "string", "enum": ["open", "bearer", "cookie"]},
                    "csrf_token": {"type": "string", "nullable": True},
                    "token_required": {"type": "boolean"},
                    "store": {"type": "string", "description": "Store URL, password hidden"},
                    "history_interval": {"type": "number"},
                    "history_span": {"type": "number"},
                },
            },
            "Node": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "name": {"type": "string"},
                    "state": {"type": "string", "enum": ["live", "draining", "dead", "stopped"]},
                    "heartbeat_age": {"type": "number"},
                    "slots": {"type": "integer"},
                    "prefetch": {"type": "integer"},
                    "running": {"type": "integer"},
                    "assigned": {"type": "integer"},
                    "resources": {"type": "object", "additionalProperties": {"type": "number"}},
                    "used": {"type": "object", "additionalProperties": {"type": "number"}},
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                    "queues": {"type": "array", "items": {"type": "string"}},
                    "host": {"type": "string"},
                    "pid": {"type": "integer"},
                    "session": {
                        "description": "The node's coordination session: \"store "
                        "heartbeats\" with the store coordinator; with ZooKeeper its znode's "
                        "owner session (session_id, load, since), or null: no session, dead",
                        "nullable": True,
                        "oneOf": [{"type": "string"}, _ref("CoordinatorSession")],
                    },
                },
            },
            "CoordinatorSession": {
                "type": "object",
                "properties": {
                    "state": {"type": "string"},
                    "session_id": {"type": "string", "nullable": True},
                    "session_timeout": {"type": "number"},
                    "leading": {"type": "boolean"},
                    "token": {"type": "integer", "nullable": True},
                    "znode": {"type": "string", "nullable": True},
                    "load": {"type": "string", "nullable": True},
                    "since": {"type": "number"},
                    "url": {"type": "string"},
                },
            },
            "Status": {
                "type": "object",
                "properties": {
                    "store": {"type": "string"},
                    "coordinator": {
                        "type": "object",
                        "description": "Who decides liveness and leadership: kind store or "
                        "zookeeper, and its URL",
                        "properties": {
                            "kind": {"type": "string", "enum": ["store", "zookeeper"]},
                            "url": {"type": "string"},
                            "session_timeout": {"type": "number"},
                            "reader": {"nullable": True, **_ref("CoordinatorSession")},
                        },
                    },
                    "now": {"type": "number"},
                    "nodes": {"type": "array", "items": _ref("Node")},
                    "jobs": {
                        "type": "object",
                        "properties": {
                            "total": {
                                "type": "object",
                                "additionalProperties": {"type": "integer"},
                            },
                            "by_queue": {
                                "type": "object",
                                "additionalProperties": {
                                    "type": "object",
                                    "additionalProperties": {"type": "integer"},
                                },
                            },
                        },
                    },
                    "scheduler": {
                        "type": "object",
                        "properties": {
                            "leader": {"type": "string", "nullable": True},
                            "token": {"type": "integer", "nullable": True},
                            "since": {"type": "number", "nullable": True},
                            "decisions_per_s": {"type": "number", "nullable": True},
                            "placed_total": {"type": "integer", "nullable": True},
                            "waiting": {"type": "integer", "nullable": True},
                            "unplaceable": {
                                "type": "array",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "reason": {"type": "string"},
                                        "jobs": {"type": "integer"},
                                    },
                                },
                            },
                            "held": {
                                "type": "array",
                                "description": "Pending jobs the leader held back in its "
                                "last cycle because of a concurrency key's limit or a task's "
                                "rate limit, by reason",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "reason": {"type": "string"},
                                        "jobs": {"type": "integer"},
                                    },
                                },
                            },
                            "policy": {"type": "string", "nullable": True},
                            "allocation": {
                                "type": "object",
                                "description": "Which allocation policies the leader "
                                "applies: fair_share, aging (jobs with aging seen lately), "
                                "preemption, backfill, gangs",
                                "additionalProperties": {"type": "boolean"},
                            },
                            "tenants": {
                                "type": "array",
                                "description": "Fair share: each tenant's weight, caps, "
                                "dominant share (0..1) and jobs running and pending (in the "
                                "leader's window), as the leader last published them",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "tenant": {"type": "string"},
                                        "weight": {"type": "number"},
                                        "limit": {
                                            "type": "object",
                                            "additionalProperties": {"type": "number"},
                                        },
                                        "dominant_share": {"type": "number"},
                                        "running": {"type": "integer"},
                                        "pending": {"type": "integer"},
                                    },
                                },
                            },
                            "session": {
                                "description": "The leader's coordination session as it "
                                "last published it",
                                "nullable": True,
                                **_ref("CoordinatorSession"),
                            },
                            "totals": {
                                "type": "object",
                                "description": "Cumulative counts carried from leader to "
                                "leader: leader_changes, nodes_reaped, lease_expiries, "
                                "jobs_requeued, preemptions, preempted_work_s",
                                "additionalProperties": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            "Sample": {
                "type": "object",
                "properties": {
                    "t": {"type": "number", "description": "Store clock, unix seconds"},
                    "counts": {"type": "object", "additionalProperties": {"type": "integer"}},
                    "depth": {
                        "type": "object",
                        "description": "Jobs by unfinished state: waiting, scheduled, pending, "
                        "assigned, running, retrying",
                        "additionalProperties": {"type": "integer"},
                    },
                    "nodes": {"type": "object", "additionalProperties": {"type": "object"}},
                    "slots_total": {"type": "integer"},
                    "slots_used": {"type": "integer"},
                    "load": {"type": "number", "description": "Running jobs / slots of live nodes"},
                    "placements_per_s": {"type": "number"},
                    "finished_per_s": {"type": "number", "nullable": True},
                    "succeeded_per_s": {"type": "number", "nullable": True},
                    "failed_per_s": {
                        "type": "number",
                        "nullable": True,
                        "description": "Jobs that turned dead or upstream_failed, per second",
                    },
                    "failure_rate": {
                        "type": "number",
                        "nullable": True,
                        "description": "failed / (succeeded + failed) over the sample interval, "
                        "where failed is dead + upstream_failed (cancelled counts in neither)",
                    },
                },
            },
            "History": {
                "type": "object",
                "properties": {
                    "interval": {"type": "number"},
                    "span": {"type": "number"},
                    "started_at": {"type": "number", "nullable": True},
                    "last_error": {"type": "string", "nullable": True},
                    "samples": {"type": "array", "items": _ref("Sample")},
                },
            },
            "JobSummary": {
                "type": "object",
                "properties": {
                    "id": {"type": "string"},
                    "task": {"type": "string"},
                    "queue": {"type": "string"},
                    "args": {"type": "array", "items": {}},
                    "kwargs": {"type": "object"},
                    "priority": {"type": "integer"},
                    "state": {"type": "string", "enum": _STATES},
                    "attempts": {"type": "integer"},
                    "max_attempts": {"type": "integer"},
                    "timeout": {"type": "number", "nullable": True},
                    "resources": {"type": "object"},
                    "labels": {"type": "object"},
                    "affinity": {"type": "object"},
                    "created_at": {"type": "number"},
                    "scheduled_at": {"type": "number", "nullable": True},
                    "node_id": {"type": "string", "nullable": True},
                    "token": {"type": "integer"},
                    "started_at": {"type": "number", "nullable": True},
                    "finished_at": {"type": "number", "nullable": True},
                    "lease_expires_at": {"type": "number", "nullable": True},
                    "error": {"type": "string", "nullable": True},
                    "cancel_requested": {"type": "boolean"},
                    "depends_on": {
                        "type": "array",
                        "items": {"type": "string"},
                        "description": "Ids of the parent jobs that must succeed before this "
                        "one leaves `waiting`",
                    },
                    "pass_results": {
                        "type": "boolean",
                        "description": "The parents' results are passed as the first argument",
                    },
                    "workflow_id": {"type": "string", "nullable": True},
                    "unique_key": {"type": "string", "nullable": True},
                    "concurrency_key": {"type": "string", "nullable": True},
                    "concurrency_limit": {
                        "type": "integer",
                        "description": "At most this many jobs with the concurrency key are "
                        "assigned or running (0: no limit)",
                    },
                    "rate_limit": {
                        "type": "string",
                        "nullable": True,
                        "description": "The task's fleet-wide rate limit, `<count>/<seconds>`",
                    },
                    "alloc": {
                        "type": "object",
                        "nullable": True,
                        "description": "Allocation options (tenant, preemptible, aging, gang); "
                        "null when all are defaults. Used by the simulator, not yet by a live "
                        "fleet (README, 'Sharing a fleet')",
                    },
                    "preempted_at": {
                        "type": "number",
                        "nullable": True,
                        "description": "When the job was last preempted (unix seconds)",
                    },
                    "preemptions": {
                        "type": "integer",
                        "description": "How many times the job was preempted",
                    },
                },
            },
            "Schedule": {
                "type": "object",
                "description": "A periodic schedule. A schedule whose stored spec cannot be "
                "read has only `name`, `last_tick` and `error`.",
                "properties": {
                    "name": {"type": "string"},
                    "task": {"type": "string", "nullable": True},
                    "cron": {"type": "string"},
                    "tz": {"type": "string", "description": "IANA time zone of the cron"},
                    "missed": {"type": "string", "enum": ["skip", "run_once"]},
                    "grace": {
                        "type": "number",
                        "description": "With `skip`: how late (seconds) a tick may still run",
                    },
                    "last_tick": {
                        "type": "number",
                        "nullable": True,
                        "description": "Last tick handled (run or skipped), unix seconds",
                    },
                    "last_tick_iso": {"type": "string", "nullable": True},
                    "next_tick": {"type": "number", "description": "Unix seconds"},
                    "next_tick_iso": {"type": "string"},
                    "error": {"type": "string"},
                },
            },
            "Attempt": {
                "type": "object",
                "properties": {
                    "job_id": {"type": "string"},
                    "token": {"type": "integer", "description": "The assignment's fencing token"},
                    "attempt": {
                        "type": "integer",
                        "description": "Attempt number (counted from 1 again after a retry)",
                    },
                    "node_id": {"type": "string", "nullable": True},
                    "started_at": {"type": "number", "description": "Unix seconds"},
                    "ended_at": {"type": "number", "nullable": True},
                    "outcome": {
                        "type": "string",
                        "nullable": True,
                        "enum": ["succeeded", "failed", "fatal", "cancelled", "lost", "released"],
                        "description": "null while it runs; `lost`: taken back from a lost "
                        "node or an expired lease; `released`: handed back at shutdown",
                    },
                    "cut_short": {
                        "type": "string",
                        "nullable": True,
                        "enum": [
                            "timeout",
                            "crashed",
                            "cancelled",
                            "lease_expired",
                            "node_lost",
                            "shutdown",
                        ],
                    },
                    "error": {"type": "string", "nullable": True},
                    "traceback": {"type": "string", "nullable": True},
                },
            },
            "Job": {
                "allOf": [
                    _ref("JobSummary"),
                    {
                        "type": "object",
                        "properties": {
                            "result": {"nullable": True},
                            "traceback": {"type": "string", "nullable": True},
                            "payload_ok": {"type": "boolean"},
                            "parents": {
                                "type": "array",
                                "description": "The jobs of `depends_on`, in order, with their "
                                "task and state (null for a parent that was pruned)",
                                "items": {
                                    "type": "object",
                                    "properties": {
                                        "id": {"type": "string"},
                                        "task": {"type": "string", "nullable": True},
                                        "state": {
                                            "type": "string",
                                            "enum": _STATES,
                                            "nullable": True,
                                        },
                                    },
                                },
                            },
                            "attempt_history": {
                                "type": "array",
                                "description": "The job's last attempts (20 by default, the "
                                "store URL's `attempt_history`), oldest first",
                                "items": _ref("Attempt"),
                            },
                            "timings": {
                                "type": "object",
                                "properties": {
                                    "waited": {"type": "number", "nullable": True},
                                    "ran": {"type": "number", "nullable": True},
                                    "total": {"type": "number", "nullable": True},
                                },
                            },
                        },
                    },
                ]
            },
        },
    },
}


def openapi_document() -> dict[str, Any]:
    """A fresh copy of the document."""
    return copy.deepcopy(_DOCUMENT)
