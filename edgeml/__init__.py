"""edgeml: the workstation and fleet side.

Train, compress and evaluate models, sign and publish releases, roll them out to a fleet in
stages gated on device telemetry. Imports the contract from :mod:`device_agent.protocol`.
"""

__version__ = "0.1.0"
