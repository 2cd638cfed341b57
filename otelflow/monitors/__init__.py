"""Resource monitoring: host, process and GPU sampling into ``ResourceUpdate`` events.

``ResourceMonitor`` runs one daemon thread that samples with psutil (and NVML, when the
``otelflow[gpu]`` extra and a GPU are present); ``gpu_status()`` says whether GPU metrics
are collected in this process, and why not.
"""

from __future__ import annotations

from otelflow.monitors.base import ResourceMonitor, Sampler
from otelflow.monitors.gpu import GpuState, GpuStatus, gpu_status

__all__ = ["GpuState", "GpuStatus", "ResourceMonitor", "Sampler", "gpu_status"]
