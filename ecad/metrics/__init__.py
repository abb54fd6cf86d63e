"""Quality metrics (fidelity, clip, image-reward, pickscore, hpsv2, fid) and cost (latency)."""

from ecad.metrics.base import (
    MetricError,
    MetricResult,
    MissingWeightsError,
    QualityMetric,
    UnknownOptionError,
    get_metric,
    higher_is_better,
    list_metrics,
    register_metric,
    registered_class,
)

__all__ = [
    "MetricError",
    "MetricResult",
    "MissingWeightsError",
    "QualityMetric",
    "UnknownOptionError",
    "get_metric",
    "higher_is_better",
    "list_metrics",
    "register_metric",
    "registered_class",
]
