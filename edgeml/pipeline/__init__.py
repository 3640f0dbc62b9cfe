"""The workstation model pipeline: data -> train -> convert (TFLite/ONNX variants) -> evaluate
in the real runtimes -> select -> report.

Entry points: :func:`edgeml.pipeline.train.train` and :func:`edgeml.pipeline.convert.convert`.
Modules: ``data`` (load/validate/encode), ``training`` helpers in ``train``, ``profile``
(reference profile, golden vectors), ``tflite`` and ``onnx_export`` (variants), ``runtimes``
(LiteRT / onnxruntime on the host), ``evaluate``, ``select``, ``manifest``, ``report``,
``outputs`` (atomic folders), ``hostinfo``.
"""
