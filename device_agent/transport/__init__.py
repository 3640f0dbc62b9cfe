"""Transport adapters: MQTT with reconnect, last will, QoS 1 (:class:`MqttTransport`)."""

from device_agent.transport.mqtt import MqttTransport, backoff_delay, wait_acked

__all__ = ["MqttTransport", "backoff_delay", "wait_acked"]
