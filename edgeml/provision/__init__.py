"""Flashing devices and locking down the fleet: device identities (a fleet CA and client
certificates, or passwords), the broker's access rules and TLS, provisioning bundles, revocation,
and an embedded MQTT broker for machines without Mosquitto.

Library entry points:

- :func:`edgeml.provision.broker.write_broker_config` — ``mosquitto.conf``, passwd, ACL, TLS files
- :func:`edgeml.provision.device.provision_device` / :func:`~edgeml.provision.device.revoke_device`
- :func:`edgeml.provision.embedded_broker.start_embedded_broker` — an in-process broker (amqtt)
"""

from __future__ import annotations

from edgeml.provision.paths import ProvisionPaths

__all__ = ["ProvisionPaths"]
