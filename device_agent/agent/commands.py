"""`edgeml-agent run` and `edgeml-agent status`."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from device_agent.agent.config import load_config
from device_agent.fsutil import atomic_write_bytes


class JsonLogFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc)


def setup_logging(level: str, debug: bool = False) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonLogFormatter())
    root = logging.getLogger("edgeml")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else getattr(logging, level.upper(), logging.INFO))
    root.propagate = False


def cmd_run(args: argparse.Namespace) -> int:
    cfg = load_config(Path(args.config))
    setup_logging(cfg.log_level, getattr(args, "debug", False))
    from device_agent.agent.core import Agent

    # request threads, the telemetry/audit thread and MQTT share one interpreter: switching
    # threads every 1 ms (not 5) keeps a background flush from holding a request's answer back
    sys.setswitchinterval(0.001)
    agent = Agent(cfg)
    done = threading.Event()

    def _stop(signum: int, frame: Any) -> None:
        done.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    agent.start()
    if agent.http_port is not None:
        logging.getLogger("edgeml.agent").info("serving on http://%s:%s", cfg.http_host_port[0], agent.http_port)  # type: ignore[index]
        if args.port_file:
            # atomic: a reader polling for the file never sees it empty
            atomic_write_bytes(Path(args.port_file), str(agent.http_port).encode(), fsync=False)
    try:
        while not done.wait(0.5):
            pass
    finally:
        agent.stop()
    return 0


def read_status(cfg_path: Path) -> dict[str, Any]:
    """What the agent on this data folder runs and its update state (read from disk; works
    whether or not the agent is running)."""
    from device_agent.agent import statemachine as sm
    from device_agent.agent.slots import SlotStore
    from device_agent.errors import DataError
    from device_agent.fsutil import read_json

    cfg = load_config(cfg_path)
    slots = SlotStore(cfg.slots_dir)
    p = slots.pointer()

    def describe(slot: str | None) -> dict[str, Any] | None:
        if not slot:
            return None
        try:
            info = slots.info(slot)
            return {"slot": slot, "model": info.name, "version": info.version, "sha256": info.sha256}
        except DataError as exc:
            return {"slot": slot, "error": exc.message}

    try:
        rec = sm.UpdateRecord.from_dict(read_json(cfg.state_path) or sm.UpdateRecord().to_dict())
    except (OSError, ValueError, DataError) as exc:
        rec = sm.UpdateRecord(reason=f"unreadable: {exc}")
    spooled = len([f for f in cfg.spool_dir.glob("*.json") if f.stem.isdigit()]) if cfg.spool_dir.exists() else 0
    return {
        "device_id": cfg.device_id,
        "fleet": cfg.fleet,
        "broker": str(cfg.broker_url),
        "active": describe(p["active"]),
        "previous": describe(p["previous"]),
        "update_state": rec.state,
        "update_target": f"{rec.target.name} {rec.target.version}" if rec.target else None,
        "last_event": rec.last_event,
        "reason": rec.reason,
        "refused": rec.refused,
        "spooled_windows": spooled,
        "updated_at": rec.updated_at,
    }


def cmd_status(args: argparse.Namespace) -> int:
    st = read_status(Path(args.config))
    if args.json:
        print(json.dumps(st, indent=2))
        return 0
    act = st["active"] or {}
    prev = st["previous"] or {}
    print(f"device      {st['device_id']} (fleet {st['fleet']}, broker {st['broker']})")
    print(f"serving     {act.get('model', '-')} {act.get('version', '(no model)')}")
    print(f"previous    {prev.get('model', '-')} {prev.get('version', '')}")
    target = f" -> {st['update_target']}" if st["update_target"] else ""
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(st["updated_at"])) if st["updated_at"] else "-"
    print(f"update      {st['update_state']}{target} (last event {st['last_event'] or '-'} at {when} UTC)")
    if st["reason"]:
        print(f"reason      {st['reason']}")
    print(f"telemetry   {st['spooled_windows']} window(s) spooled")
    return 0


def register(sub: Any) -> None:
    """Add this package's subcommands to the ``edgeml-agent`` subparsers."""
    p = sub.add_parser(
        "run",
        help="run the agent: follow updates, serve predictions, report telemetry",
        description="Run the device agent with the settings in agent.toml until SIGTERM/SIGINT. "
        "Logs are JSON lines on stderr.",
    )
    p.add_argument("--config", "-c", default="agent.toml", help="agent settings (TOML; default ./agent.toml)")
    p.add_argument("--port-file", default=None, help="write the bound HTTP port here (useful with port 0)")
    p.set_defaults(func=cmd_run)
    s = sub.add_parser(
        "status",
        help="print the model being served and the update state",
        description="Read the agent's data folder and print what it serves, the previous slot and the update state.",
    )
    s.add_argument("--config", "-c", default="agent.toml", help="agent settings (TOML; default ./agent.toml)")
    s.add_argument("--json", action="store_true", help="print JSON")
    s.set_defaults(func=cmd_status)
