"""Short import path for the embedded MQTT broker (see :mod:`edgeml.provision.embedded_broker`)."""

from __future__ import annotations

from edgeml.provision.embedded_broker import EmbeddedBroker, start_embedded_broker

__all__ = ["EmbeddedBroker", "start_embedded_broker"]
