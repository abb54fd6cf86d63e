"""Quality metrics (fidelity, clip, image-reward, pickscore, hpsv2, fid) and cost (latency)."""

from ecad.metrics.base import (MetricError, MetricResult, MissingWeightsError, QualityMetric, get_metric,
                               list_metrics, register_metric)

__all__ = ["MetricError", "MetricResult", "MissingWeightsError", "QualityMetric", "get_metric", "list_metrics",
           "register_metric"]
