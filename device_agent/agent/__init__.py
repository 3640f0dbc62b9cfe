"""The device agent: config, the update state machine, slots, probation, telemetry, the Agent.

from device_agent.agent import Agent, AgentConfig
"""

from device_agent.agent.config import AgentConfig, load_config
from device_agent.agent.core import Agent, NotReady, PredictError, Prediction

__all__ = ["Agent", "AgentConfig", "NotReady", "PredictError", "Prediction", "load_config"]
