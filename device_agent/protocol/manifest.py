"""The model manifest: everything a device needs to know about a model besides its bytes.

It travels inside the signed update metadata (as the target's custom field ``edgeml``), so a
device trusts it only after verification. Written by ``edgeml convert``/``edgeml publish``.

Contents: format and quantization, the input/output tensor spec, labels, preprocessing facts
(feature names, categorical vocabularies — numeric scaling is inside the graph), the reference
profile for drift, golden input/output vectors for the on-device self-test with their
tolerance, the host's measured metrics, a latency budget, and lineage.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from device_agent.errors import SchemaError
from device_agent.protocol.schema import Record, require

FORMATS = ("tflite", "onnx")
DTYPES = ("float32", "float16", "int8", "uint8", "int32", "int64")


@dataclass
class TensorSpec:
    """A tensor's name, shape (``-1`` for a free dimension, normally the batch) and dtype.

    ``scale``/``zero_point`` are set for quantized (int8/uint8) tensors.
    """

    name: str
    shape: list[int]
    dtype: str = "float32"
    scale: Optional[float] = None
    zero_point: Optional[int] = None

    def __post_init__(self) -> None:
        if not isinstance(self.shape, list) or not all(isinstance(d, int) for d in self.shape):
            raise SchemaError(f"tensor {self.name!r}: shape must be a list of integers")
        if self.dtype not in DTYPES:
            raise SchemaError(f"tensor {self.name!r}: dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    @property
    def sample_shape(self) -> list[int]:
        """The shape of one sample (the batch dimension removed)."""
        return self.shape[1:]

    @property
    def sample_size(self) -> int:
        n = 1
        for d in self.sample_shape:
            n *= max(d, 1)
        return n

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.scale is not None:
            out["scale"] = self.scale
            out["zero_point"] = self.zero_point
        return out

    @classmethod
    def from_dict(cls, data: Any) -> TensorSpec:
        if not isinstance(data, dict):
            raise SchemaError("tensor spec: expected an object")
        try:
            return cls(
                str(data["name"]),
                list(data["shape"]),
                str(data.get("dtype", "float32")),
                data.get("scale"),
                data.get("zero_point"),
            )
        except KeyError as exc:
            raise SchemaError(f"tensor spec: missing {exc}") from exc


@dataclass
class FeatureProfile:
    """Reference distribution of one input feature: interior bin edges and the training
    frequency of each of the ``len(edges) + 1`` bins."""

    name: str
    edges: list[float]
    freqs: list[float]

    def __post_init__(self) -> None:
        if len(self.freqs) != len(self.edges) + 1:
            raise SchemaError(f"feature {self.name!r}: {len(self.freqs)} frequencies for {len(self.edges)} edges")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "edges": list(self.edges), "freqs": list(self.freqs)}

    @classmethod
    def from_dict(cls, data: Any) -> FeatureProfile:
        if not isinstance(data, dict):
            raise SchemaError("feature profile: expected an object")
        try:
            return cls(str(data["name"]), [float(e) for e in data["edges"]], [float(f) for f in data["freqs"]])
        except (KeyError, TypeError, ValueError) as exc:
            raise SchemaError(f"feature profile: {exc}") from exc


@dataclass
class ReferenceProfile:
    """What the training data looked like: per-feature bins, class frequencies, confidence histogram.

    For image inputs ``features`` summarise a few pooled statistics rather than every pixel
    (``feature_kind`` says which: ``"raw"`` = one per input column, ``"pooled"`` = see ``pooling``).
    """

    features: list[FeatureProfile] = field(default_factory=list)
    classes: dict[str, float] = field(default_factory=dict)
    confidence_edges: list[float] = field(default_factory=list)
    confidence_freqs: list[float] = field(default_factory=list)
    feature_kind: str = "raw"
    pooling: Optional[str] = None

    @property
    def feature_edges(self) -> list[list[float]]:
        return [f.edges for f in self.features]

    @property
    def feature_freqs(self) -> list[list[float]]:
        return [f.freqs for f in self.features]

    def to_dict(self) -> dict[str, Any]:
        return {
            "features": [f.to_dict() for f in self.features],
            "classes": dict(self.classes),
            "confidence_edges": list(self.confidence_edges),
            "confidence_freqs": list(self.confidence_freqs),
            "feature_kind": self.feature_kind,
            "pooling": self.pooling,
        }

    @classmethod
    def from_dict(cls, data: Any) -> ReferenceProfile:
        if not isinstance(data, dict):
            raise SchemaError("reference profile: expected an object")
        return cls(
            [FeatureProfile.from_dict(f) for f in data.get("features", [])],
            {str(k): float(v) for k, v in data.get("classes", {}).items()},
            [float(e) for e in data.get("confidence_edges", [])],
            [float(f) for f in data.get("confidence_freqs", [])],
            str(data.get("feature_kind", "raw")),
            data.get("pooling"),
        )


@dataclass
class GoldenVector:
    """One input and the output the host measured for it in the variant's own runtime."""

    input: list[Any]
    output: list[Any]

    def to_dict(self) -> dict[str, Any]:
        return {"input": self.input, "output": self.output}

    @classmethod
    def from_dict(cls, data: Any) -> GoldenVector:
        if not isinstance(data, dict) or "input" not in data or "output" not in data:
            raise SchemaError("golden vector: expected an object with input and output")
        return cls(data["input"], data["output"])


@dataclass
class ModelManifest(Record):
    """The ML manifest of one model variant."""

    KIND = "manifest"

    name: str = ""
    version: str = ""
    format: str = "tflite"
    quantization: str = "fp32"
    filename: str = "model.tflite"
    task: str = "classification"
    inputs: list[TensorSpec] = field(default_factory=list)
    outputs: list[TensorSpec] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    preprocessing: dict[str, Any] = field(default_factory=dict)
    reference: ReferenceProfile = field(default_factory=ReferenceProfile)
    golden: list[GoldenVector] = field(default_factory=list)
    golden_atol: float = 1e-4
    latency_budget_ms: Optional[float] = None
    metrics: dict[str, Any] = field(default_factory=dict)
    lineage: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelManifest:
        data = dict(data)
        try:
            if "inputs" in data:
                data["inputs"] = [TensorSpec.from_dict(t) for t in data["inputs"]]
            if "outputs" in data:
                data["outputs"] = [TensorSpec.from_dict(t) for t in data["outputs"]]
            if "reference" in data:
                data["reference"] = ReferenceProfile.from_dict(data["reference"])
            if "golden" in data:
                data["golden"] = [GoldenVector.from_dict(g) for g in data["golden"]]
        except TypeError as exc:
            raise SchemaError(f"manifest: {exc}") from exc
        return super().from_dict(data)

    def validate(self) -> None:
        require(isinstance(self.name, str) and bool(self.name), self.KIND, "name is required")
        require(self.format in FORMATS, self.KIND, f"format must be one of {', '.join(FORMATS)}")
        require(len(self.inputs) >= 1, self.KIND, "at least one input tensor is required")
        require(len(self.outputs) >= 1, self.KIND, "at least one output tensor is required")
        require(
            isinstance(self.golden_atol, (int, float)) and self.golden_atol >= 0,
            self.KIND,
            "golden_atol must be a non-negative number",
        )
        require(isinstance(self.labels, list), self.KIND, "labels must be a list")
