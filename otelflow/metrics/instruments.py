"""Names, units, attributes and bucket boundaries of every otelflow metric.

Names follow OTel conventions (``otelflow.tasks.completed`` with unit ``{task}``, durations
in ``s``, sizes in ``By``), so the Prometheus names come out as
``otelflow_tasks_completed_total``, ``otelflow_task_duration_seconds`` and
``otelflow_node_memory_used_bytes``. Attributes are bounded: task name, workflow name,
status, backend, node — never a task id (per-task detail lives in spans and JSONL).
"""

from __future__ import annotations

METER_NAME = "otelflow"

# Attribute keys (Prometheus labels: task_name, workflow_name, backend, status, node, ...).
TASK_NAME = "task.name"
WORKFLOW_NAME = "workflow.name"
BACKEND = "backend"
STATUS = "status"
NODE = "node"
DIRECTION = "direction"
GPU = "gpu"
PROCESS = "process"

#: Lifecycle transition counters, in the order of ``TaskCounts`` slots.
TRANSITIONS: tuple[str, ...] = (
    "created",
    "resolved",
    "submitted",
    "queued",
    "started",
    "completed",
    "failed",
    "canceled",
)
COUNTER_NAMES = {t: f"otelflow.tasks.{t}" for t in TRANSITIONS}
TASKS_RUNNING = "otelflow.tasks.running"
TASKS_QUEUED = "otelflow.tasks.queued"
WORKFLOWS_ACTIVE = "otelflow.workflows.active"
EVENTS_DROPPED = "otelflow.telemetry.events_dropped"
QUEUE_DEPTH = "otelflow.telemetry.queue_depth"
THROTTLED = "otelflow.telemetry.throttled"

# Histograms: (name, unit, description).
TASK_DURATION = ("otelflow.task.duration", "s", "Task execution time, started to terminal state.")
DEPENDENCY_WAIT = (
    "otelflow.task.dependency_wait",
    "s",
    "Time from task creation until its last dependency was satisfied.",
)
DISPATCH_WAIT = (
    "otelflow.task.dispatch_wait",
    "s",
    "The engine's lag: from dependency resolution until the task was handed to the executor.",
)
QUEUE_WAIT = (
    "otelflow.task.queue_wait",
    "s",
    "Waiting for a worker: from hand-over to the executor (submitted or queued) until the task started.",
)
WORKFLOW_DURATION = ("otelflow.workflow.duration", "s", "Workflow duration, scope entry to end.")
TASK_CPU_TIME = ("otelflow.task.cpu_time", "s", "CPU seconds used by the task's process(es).")
TASK_PEAK_RSS = ("otelflow.task.peak_rss", "By", "Peak resident memory of the task's process.")

#: Seconds; covers sub-millisecond tasks to hour-long ones.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
#: Bytes, 1 MiB to 64 GiB.
BYTES_BUCKETS: tuple[float, ...] = tuple(float(2**i) for i in range(20, 37))

# Resource gauges: (name, unit, description, ResourceUpdate field).
NODE_GAUGES = (
    ("otelflow.node.cpu.utilization", "1", "Host CPU utilization (0..1).", "cpu_utilization"),
    ("otelflow.node.memory.utilization", "1", "Host memory in use (0..1).", "memory_utilization"),
    ("otelflow.node.memory.used", "By", "Host memory in use.", "memory_used_bytes"),
)
PROCESS_GAUGES = (
    ("otelflow.process.cpu.utilization", "1", "Process CPU (1.0 = one core).", "cpu_utilization"),
    ("otelflow.process.memory.rss", "By", "Process resident memory.", "memory_used_bytes"),
)
GPU_GAUGES = (
    ("otelflow.gpu.utilization", "1", "GPU utilization (0..1).", "gpu_utilization"),
    ("otelflow.gpu.memory.used", "By", "GPU memory in use.", "memory_used_bytes"),
    ("otelflow.gpu.memory.total", "By", "GPU memory size.", "memory_total_bytes"),
)
NODE_DISK_IO = "otelflow.node.disk.io"
NODE_NETWORK_IO = "otelflow.node.network.io"

#: Beyond this many distinct (task name, workflow name, backend) combinations, further
#: ones are folded into one overflow series and a warning is logged once.
MAX_SERIES = 2000
OVERFLOW = "_other"
