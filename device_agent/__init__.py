"""edgeml device agent: what every board installs.

Depends only on numpy, paho-mqtt, the update framework (python-tuf) and one inference runtime.
Never imports TensorFlow, scikit-learn or anything from ``edgeml``.
"""

__version__ = "0.1.0"
