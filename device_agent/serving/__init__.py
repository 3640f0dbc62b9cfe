"""Local serving: input checks (:mod:`.inputs`), the HTTP API (:mod:`.http`), metrics (:mod:`.metrics`)."""

from device_agent.serving.inputs import InputError, check_batch, parse_json_body, parse_raw_body

__all__ = ["InputError", "check_batch", "parse_json_body", "parse_raw_body"]
