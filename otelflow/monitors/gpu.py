"""NVIDIA GPU sampling through NVML (``pynvml``, from the optional ``otelflow[gpu]`` extra).

No GPU is a normal state, not an error: NVML is initialised lazily, once per process (a
forked child initialises again, as NVML requires), and the outcome is kept as a
:class:`GpuStatus` whose :class:`GpuState` says *why* GPU metrics are off. That outcome is
logged at DEBUG only. NVML is never shut down here: its init is reference-counted and
other libraries in the process may be using it too.
"""

from __future__ import annotations

import enum
import importlib
import logging
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from otelflow.events.model import ResourceUpdate, new_event_id

__all__ = ["GpuSampler", "GpuState", "GpuStatus", "Nvml", "gpu_status"]

_log = logging.getLogger("otelflow")

_INSTALL_HINT = "pip install 'otelflow[gpu]'"
# NVML return codes (nvml.h); pynvml exposes the same names, these are the fallbacks.
_NVML_ERROR_DRIVER_NOT_LOADED = 9
_NVML_ERROR_LIBRARY_NOT_FOUND = 12


class GpuState(str, enum.Enum):
    """Whether GPU metrics are collected, and if not, why not."""

    ENABLED = "enabled"
    """NVML initialised and at least one GPU found."""
    DISABLED_BY_CONFIG = "disabled_by_config"
    """GPU sampling was turned off (``ResourceMonitor(gpu=False)``)."""
    NOT_INSTALLED = "not_installed"
    """``pynvml`` is not installed (``pip install 'otelflow[gpu]'``)."""
    NO_LIBRARY = "no_library"
    """``pynvml`` is installed but the NVML library (libnvidia-ml) is not."""
    NO_DEVICES = "no_devices"
    """NVML is present but there is no GPU (or the NVIDIA driver is not loaded)."""
    FAILED = "failed"
    """NVML raised another error; the reason carries its message."""


@dataclass(frozen=True)
class GpuStatus:
    """The GPU sampling state and a one-line, human-readable reason.

    Attributes:
        state: What happened when NVML was initialised in this process.
        reason: Why, in words (e.g. the install command, or NVML's error message).
        device_count: GPUs found (0 unless ``state`` is ``ENABLED``).
    """

    state: GpuState
    reason: str
    device_count: int = 0

    @property
    def enabled(self) -> bool:
        """True if GPU metrics are being collected."""
        return self.state is GpuState.ENABLED

    def __str__(self) -> str:
        return f"{self.state.value}: {self.reason}"


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Nvml:
    """Process-wide NVML state: initialised on first use, once per PID; thread-safe.

    Args:
        loader: Returns the ``pynvml`` module (tests pass a stand-in).
    """

    def __init__(self, loader: Callable[[], ModuleType] = _import_pynvml) -> None:
        self._loader = loader
        self._lock = threading.Lock()
        if hasattr(os, "register_at_fork"):  # a fork during init must not leave it held
            os.register_at_fork(after_in_child=self._renew_lock)
        self._pid: int | None = None
        self._status = GpuStatus(GpuState.FAILED, "NVML not initialised yet")
        self._nvml: Any = None
        self._handles: list[Any] = []
        self._warned: set[str] = set()

    def _renew_lock(self) -> None:
        self._lock = threading.Lock()

    def status(self) -> GpuStatus:
        """Initialise NVML if this process has not yet, and return the outcome."""
        if self._pid != os.getpid():
            with self._lock:
                if self._pid != os.getpid():
                    self._status = self._init()
                    self._pid = os.getpid()
                    _log.debug("otelflow GPU sampling: %s", self._status)
        return self._status

    def _init(self) -> GpuStatus:
        self._nvml, self._handles = None, []
        try:
            nvml = self._loader()
        except ImportError:
            return GpuStatus(GpuState.NOT_INSTALLED, f"pynvml is not installed; {_INSTALL_HINT}")
        try:
            nvml.nvmlInit()
        except Exception as exc:  # noqa: BLE001 - any failure means "no GPU metrics"
            return self._classify(nvml, exc)
        try:
            count = int(nvml.nvmlDeviceGetCount())
            handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        except Exception as exc:  # noqa: BLE001
            return GpuStatus(GpuState.FAILED, f"NVML device query failed: {exc}")
        if not handles:
            return GpuStatus(GpuState.NO_DEVICES, "NVML found no GPU")
        try:
            driver = f"driver {_text(nvml.nvmlSystemGetDriverVersion())}, "
        except Exception:  # noqa: BLE001 - only decorates the reason
            driver = ""
        self._nvml, self._handles = nvml, handles
        return GpuStatus(GpuState.ENABLED, f"NVML {driver}{count} GPU(s)", count)

    @staticmethod
    def _classify(nvml: Any, exc: Exception) -> GpuStatus:
        code = getattr(exc, "value", None)
        if code is not None and code == getattr(
            nvml, "NVML_ERROR_LIBRARY_NOT_FOUND", _NVML_ERROR_LIBRARY_NOT_FOUND
        ):
            return GpuStatus(GpuState.NO_LIBRARY, "NVML library (libnvidia-ml) not found")
        if code is not None and code == getattr(
            nvml, "NVML_ERROR_DRIVER_NOT_LOADED", _NVML_ERROR_DRIVER_NOT_LOADED
        ):
            return GpuStatus(GpuState.NO_DEVICES, "NVIDIA driver not loaded")
        return GpuStatus(GpuState.FAILED, f"NVML init failed: {type(exc).__name__}: {exc}")

    def _field(self, index: int, read: Callable[[Any], Any], handle: Any) -> Any:
        """Call one NVML query; None if unsupported or failing (a failure is logged once)."""
        nvml = self._nvml
        try:
            return read(handle)
        except Exception as exc:  # noqa: BLE001
            unsupported = getattr(nvml, "NVMLError_NotSupported", None)
            if unsupported is not None and isinstance(exc, unsupported):
                return None
            key = f"{index}:{type(exc).__name__}"
            if key not in self._warned:
                self._warned.add(key)
                _log.warning("otelflow: reading GPU %d through NVML failed: %s", index, exc)
            return None

    def sample(self, *, node: str, session_id: str | None, event_time: int) -> list[ResourceUpdate]:
        """Return one ``scope="gpu"`` update per GPU, or none if GPU sampling is off."""
        if not self.status().enabled:
            return []
        nvml = self._nvml
        out: list[ResourceUpdate] = []
        for index, handle in enumerate(self._handles):
            util = self._field(index, nvml.nvmlDeviceGetUtilizationRates, handle)
            mem = self._field(index, nvml.nvmlDeviceGetMemoryInfo, handle)
            used = int(mem.used) if mem is not None else None
            total = int(mem.total) if mem is not None else None
            out.append(
                ResourceUpdate(
                    event_id=new_event_id(),
                    event_time=event_time,
                    session_id=session_id,
                    scope="gpu",
                    node=node,
                    device=str(index),
                    gpu_utilization=util.gpu / 100.0 if util is not None else None,
                    memory_used_bytes=used,
                    memory_total_bytes=total,
                    memory_utilization=used / total if used is not None and total else None,
                )
            )
        return out


_DEFAULT = Nvml()


def gpu_status() -> GpuStatus:
    """Return whether this process collects GPU metrics, and why not if it does not.

    Initialises NVML on first call in each process (cheap afterwards); safe from any thread.
    """
    return _DEFAULT.status()


class GpuSampler:
    """The sampler :class:`~otelflow.monitors.base.ResourceMonitor` uses for GPUs.

    Args:
        nvml: The NVML state to read (default: the process-wide one behind :func:`gpu_status`).
    """

    name = "gpu"

    def __init__(self, nvml: Nvml | None = None) -> None:
        self.nvml = nvml if nvml is not None else _DEFAULT

    def status(self) -> GpuStatus:
        """Return the NVML state (initialising it in this process if needed)."""
        return self.nvml.status()

    def sample(self, *, node: str, session_id: str | None, event_time: int) -> list[ResourceUpdate]:
        """Return one update per GPU; empty when GPU sampling is off (called on the sampler thread)."""
        return self.nvml.sample(node=node, session_id=session_id, event_time=event_time)
