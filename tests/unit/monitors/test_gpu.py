"""GPU status and sampling: the real NVML state here, and a stand-in pynvml for each outcome."""

from __future__ import annotations

import logging
from types import ModuleType, SimpleNamespace
from typing import Any

import pytest

from otelflow.monitors import GpuState, GpuStatus, ResourceMonitor, gpu_status
from otelflow.monitors.gpu import GpuSampler, Nvml

OFF_STATES = {GpuState.NOT_INSTALLED, GpuState.NO_LIBRARY, GpuState.NO_DEVICES}


class FakeNVMLError(Exception):
    """Shaped like pynvml.NVMLError: carries the NVML return code as ``value``."""

    def __init__(self, value: int, message: str = "") -> None:
        super().__init__(message or f"NVML error {value}")
        self.value = value


class FakeNotSupported(FakeNVMLError):
    def __init__(self) -> None:
        super().__init__(3, "Not Supported")


def fake_pynvml(
    *, init_error: Exception | None = None, gpus: int = 2, util_supported: bool = True
) -> ModuleType:
    """A stand-in ``pynvml`` with ``gpus`` devices at 25 %·(i+1) load and 1/4 of 8 GiB used."""
    mod = ModuleType("pynvml")
    calls = {"init": 0}

    def nvml_init() -> None:
        calls["init"] += 1
        if init_error is not None:
            raise init_error

    def utilization(handle: int) -> Any:
        if not util_supported:
            raise FakeNotSupported()
        return SimpleNamespace(gpu=25 * (handle + 1), memory=0)

    ns: dict[str, Any] = {
        "calls": calls,
        "NVMLError": FakeNVMLError,
        "NVMLError_NotSupported": FakeNotSupported,
        "NVML_ERROR_DRIVER_NOT_LOADED": 9,
        "NVML_ERROR_LIBRARY_NOT_FOUND": 12,
        "nvmlInit": nvml_init,
        "nvmlDeviceGetCount": lambda: gpus,
        "nvmlDeviceGetHandleByIndex": lambda i: i,
        "nvmlSystemGetDriverVersion": lambda: b"550.54",
        "nvmlDeviceGetUtilizationRates": utilization,
        "nvmlDeviceGetMemoryInfo": lambda h: SimpleNamespace(total=8 << 30, used=2 << 30, free=6 << 30),
    }
    mod.__dict__.update(ns)
    return mod


def _sample(nvml: Nvml) -> list[Any]:
    return GpuSampler(nvml).sample(node="n", session_id="s", event_time=1)


def test_this_machine_reports_an_off_state_with_a_reason_or_real_gpus() -> None:
    status = gpu_status()
    monitor = ResourceMonitor(60.0, lambda _e: None)
    gpu_updates = [u for u in monitor.sample_once() if u.scope == "gpu"]
    assert monitor.gpu_status() == status
    assert status.reason
    if status.state is GpuState.ENABLED:  # a GPU machine: one update per device
        assert status.device_count == len(gpu_updates) > 0
        for u in gpu_updates:
            assert u.gpu_utilization is not None and 0.0 <= u.gpu_utilization <= 1.0
            assert u.memory_total_bytes and u.memory_total_bytes > 0
    else:
        assert status.state in OFF_STATES, status
        assert not status.enabled
        assert gpu_updates == []


def test_no_gpu_is_logged_at_debug_only(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="otelflow")
    nvml = Nvml(lambda: fake_pynvml(init_error=FakeNVMLError(12)))
    assert _sample(nvml) == []
    assert nvml.status().state is GpuState.NO_LIBRARY
    assert [r.levelno for r in caplog.records] == [logging.DEBUG]


def test_missing_pynvml_names_the_extra_to_install() -> None:
    def missing() -> ModuleType:
        raise ModuleNotFoundError("No module named 'pynvml'")

    status = Nvml(missing).status()
    assert status.state is GpuState.NOT_INSTALLED
    assert "pip install 'otelflow[gpu]'" in status.reason


@pytest.mark.parametrize(
    ("error", "state"),
    [
        (FakeNVMLError(12, "NVML Shared Library Not Found"), GpuState.NO_LIBRARY),
        (FakeNVMLError(9, "Driver Not Loaded"), GpuState.NO_DEVICES),
        (FakeNVMLError(999, "Unknown Error"), GpuState.FAILED),
        (OSError("broken install"), GpuState.FAILED),
    ],
)
def test_init_errors_map_to_a_state(error: Exception, state: GpuState) -> None:
    nvml = Nvml(lambda: fake_pynvml(init_error=error))
    status = nvml.status()
    assert status.state is state
    assert status.reason and not status.enabled
    if state is GpuState.FAILED:
        assert str(error) in status.reason
    assert _sample(nvml) == []


def test_no_devices() -> None:
    assert Nvml(lambda: fake_pynvml(gpus=0)).status().state is GpuState.NO_DEVICES


def test_enabled_nvml_gives_one_update_per_gpu_in_fractions() -> None:
    nvml = Nvml(lambda: fake_pynvml(gpus=2))
    assert nvml.status() == GpuStatus(GpuState.ENABLED, "NVML driver 550.54, 2 GPU(s)", 2)
    updates = _sample(nvml)
    assert [u.device for u in updates] == ["0", "1"]
    assert [u.gpu_utilization for u in updates] == [0.25, 0.5]
    for u in updates:
        assert (u.scope, u.node, u.session_id) == ("gpu", "n", "s")
        assert u.memory_used_bytes == 2 << 30 and u.memory_total_bytes == 8 << 30
        assert u.memory_utilization == 0.25


def test_unsupported_query_leaves_the_field_empty() -> None:
    (update,) = _sample(Nvml(lambda: fake_pynvml(gpus=1, util_supported=False)))
    assert update.gpu_utilization is None
    assert update.memory_used_bytes == 2 << 30


def test_nvml_is_initialised_once_per_process_and_again_after_fork() -> None:
    mod = fake_pynvml()
    nvml = Nvml(lambda: mod)
    nvml.status()
    _sample(nvml)
    nvml.status()
    assert mod.calls["init"] == 1
    nvml._pid = -1  # what a forked child sees: the state belongs to another PID
    assert nvml.status().enabled
    assert mod.calls["init"] == 2


def test_gpu_false_is_disabled_by_config() -> None:
    monitor = ResourceMonitor(60.0, lambda _e: None, gpu=False)
    status = monitor.gpu_status()
    assert status.state is GpuState.DISABLED_BY_CONFIG and status.reason
    assert str(status).startswith("disabled_by_config: ")
    assert all(u.scope != "gpu" for u in monitor.sample_once())
