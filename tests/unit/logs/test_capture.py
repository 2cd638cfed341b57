"""capture_logging(): wide-event log records, a visitor on the loggers, no loops, bounded."""

from __future__ import annotations

import logging
import pickle
import threading
from decimal import Decimal
from pathlib import Path

import pytest

import otelflow
from otelflow.logs import LogCapture
from tests.conftest import read_lines


def _start(tmp_path: Path, **options: object) -> otelflow.Telemetry:
    return otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0, environ={}, **options
    )


@pytest.fixture
def app_logger():
    log = logging.getLogger("myapp")
    before = (list(log.handlers), log.level, log.propagate)
    log.setLevel(logging.INFO)
    yield log
    log.handlers[:] = before[0]
    log.setLevel(before[1])


def test_a_record_inside_a_task_has_the_task_ids_and_typed_extras(tmp_path, app_logger):
    tel = _start(tmp_path)
    otelflow.capture_logging("myapp", level="INFO")

    @otelflow.task(name="train")
    def train():
        app_logger.info("trained epoch %d", 3, extra={
            "myapp.loss": 0.12, "myapp.epoch": 3, "myapp.ok": True, "myapp.tags": ["a", "b"],
            "myapp.none": None, "myapp.price": Decimal("1.50"), "myapp.name": "x",
        })

    with otelflow.workflow_scope("wf") as wid, otelflow.block("b1") as bid:
        train()
    tel.stop()
    (rec,) = read_lines(tel.run_dir, "log")
    task = next(e for e in read_lines(tel.run_dir, "event") if e["type"] == "TaskCreated")
    span = next(s for s in read_lines(tel.run_dir, "span") if s["name"] == "train")
    assert (rec["trace_id"], rec["span_id"]) == (span["trace_id"], span["span_id"])
    assert rec["task_id"] == task["task_id"]
    assert (rec["workflow_id"], rec["block_id"]) == (wid, bid)
    assert rec["message"] == "trained epoch 3" and rec["template"] == "trained epoch %d"
    assert rec["level"] == "INFO" and rec["logger"] == "myapp"
    assert rec["attributes"] == {
        "myapp.loss": 0.12, "myapp.epoch": 3, "myapp.ok": True, "myapp.tags": ["a", "b"],
        "myapp.none": None, "myapp.price": "1.50", "myapp.name": "x",
    }
    assert rec["attribute_types"] == {
        "myapp.loss": "number", "myapp.epoch": "integer", "myapp.ok": "boolean",
        "myapp.tags": "array", "myapp.none": "null", "myapp.price": "repr:decimal.Decimal",
        "myapp.name": "string",
    }
    assert rec["process"] > 0 and rec["thread"] == threading.current_thread().name
    assert rec["code"].endswith(".py:" + rec["code"].rsplit(":", 1)[1])


def test_a_record_outside_any_task_has_the_session_ids(tmp_path, app_logger):
    tel = _start(tmp_path)
    otelflow.capture_logging("myapp")
    app_logger.warning("no task here")
    tel.stop()
    (rec,) = read_lines(tel.run_dir, "log")
    session = next(s for s in read_lines(tel.run_dir, "span") if s["name"].startswith("session"))
    assert (rec["trace_id"], rec["span_id"]) == (session["trace_id"], session["span_id"])
    assert "task_id" not in rec


def test_an_exception_keeps_its_type_message_and_traceback(tmp_path, app_logger):
    tel = _start(tmp_path)
    otelflow.capture_logging("myapp")
    try:
        raise KeyError("missing")
    except KeyError:
        app_logger.exception("lookup failed")
    tel.stop()
    (rec,) = read_lines(tel.run_dir, "log")
    assert rec["level"] == "ERROR"
    assert rec["exception_type"] == "KeyError" and rec["exception_message"] == "'missing'"
    assert "Traceback" in rec["stacktrace"] and 'raise KeyError("missing")' in rec["stacktrace"]


def test_only_the_named_loggers_and_level_are_captured(tmp_path, app_logger):
    tel = _start(tmp_path)
    otelflow.capture_logging("myapp", level="WARNING")
    app_logger.info("below the level")
    app_logger.warning("kept")
    logging.getLogger("myapp.sub").warning("child kept")
    logging.getLogger("other").warning("not named")
    tel.stop()
    assert [r["message"] for r in read_lines(tel.run_dir, "log")] == ["kept", "child kept"]


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[tuple[str, str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.seen.append((record.name, record.levelname, record.getMessage()))


def _log_some(log: logging.Logger) -> None:
    log.debug("debug %s", 1)
    log.info("info %s", 2, extra={"k": 1})
    log.warning("warning")
    logging.getLogger("myapp.child").error("child error")


def test_the_apps_handlers_and_caplog_receive_exactly_what_they_did(tmp_path, app_logger, caplog):
    caplog.set_level(logging.INFO)
    own = _ListHandler()
    app_logger.addHandler(own)
    _log_some(app_logger)
    without = (list(own.seen), [(r.name, r.levelname, r.getMessage()) for r in caplog.records])
    own.seen.clear()
    caplog.clear()

    tel = _start(tmp_path, capture_logs=True)
    handle = otelflow.capture_logging("myapp", level="DEBUG")
    _log_some(app_logger)
    handle.stop()
    tel.stop()
    with_capture = (list(own.seen), [(r.name, r.levelname, r.getMessage()) for r in caplog.records])
    assert with_capture == without
    # and the run got them too, each once although root and "myapp" are both captured
    got = [(r["logger"], r["message"]) for r in read_lines(tel.run_dir, "log")]
    assert got == [("myapp", "info 2"), ("myapp", "warning"), ("myapp.child", "child error")]


def test_stop_restores_every_handler_list_and_level(tmp_path, app_logger):
    names = ["", "myapp", "quiet.lib"]
    logging.getLogger("quiet.lib").setLevel(logging.ERROR)
    before = {n: (list(logging.getLogger(n or None).handlers), logging.getLogger(n or None).level) for n in names}
    tel = _start(tmp_path)
    handle = otelflow.capture_logging(*names, level="DEBUG", set_level=True)
    assert logging.getLogger("quiet.lib").level == logging.DEBUG  # asked for
    logging.getLogger("quiet.lib").debug("now produced")
    handle.stop()
    handle.stop()  # idempotent
    after = {n: (list(logging.getLogger(n or None).handlers), logging.getLogger(n or None).level) for n in names}
    tel.stop()
    assert after == before
    assert [r["message"] for r in read_lines(tel.run_dir, "log")] == ["now produced"]
    logging.getLogger("quiet.lib").setLevel(logging.NOTSET)


def test_logging_while_capturing_a_record_is_not_captured_again(tmp_path, app_logger):
    class Loud:
        def __str__(self) -> str:
            app_logger.warning("logged from inside the capture")  # would re-enter the bridge
            return "loud"

    tel = _start(tmp_path, capture_logs=True)
    app_logger.warning("outer", extra={"v": Loud()})
    tel.stop()
    logs = read_lines(tel.run_dir, "log")
    assert [r["message"] for r in logs] == ["outer"]
    assert logs[0]["attributes"] == {"v": "loud"}


def test_a_flood_never_blocks_and_every_lost_record_is_counted(tmp_path, app_logger):
    tel = _start(tmp_path, queue_size=1024)
    otelflow.capture_logging("myapp")
    inside, release = threading.Event(), threading.Event()

    def hold_dispatcher() -> None:
        inside.set()
        release.wait(30)

    holder = threading.Thread(target=lambda: tel._call(hold_dispatcher, 60))
    holder.start()
    assert inside.wait(10)
    n = 5000
    for i in range(n):  # the dispatcher is held: this must not wait for it
        app_logger.info("flood %d", i)
    release.set()
    holder.join(10)
    summary = tel.stop()
    written = len(read_lines(tel.run_dir, "log"))
    assert written + summary["dropped"]["log_records"] == n
    assert 0 < written <= 512 < n  # half of the bus stays free for lifecycle events


def test_the_environment_variable_names_the_loggers(tmp_path, app_logger):
    tel = otelflow.start_telemetry(
        checkpoint_path=str(tmp_path), resource_poll_interval=0,
        environ={"OTELFLOW_CAPTURE_LOGGERS": "myapp,other.lib", "OTELFLOW_LOG_LEVEL": "warning"},
    )
    app_logger.info("too low")
    app_logger.warning("from myapp")
    logging.getLogger("other.lib").error("from other")
    logging.getLogger("unnamed").error("not captured")
    tel.stop()
    assert [r["message"] for r in read_lines(tel.run_dir, "log")] == ["from myapp", "from other"]
    assert all(not isinstance(h, otelflow.logs.CaptureHandler) for h in app_logger.handlers)


def test_the_configuration_is_a_small_picklable_value():
    cfg = LogCapture(("myapp", ""), logging.DEBUG)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert LogCapture.from_dict(cfg.to_dict()) == cfg


def test_a_bad_level_or_name_says_so_in_one_sentence():
    with pytest.raises(otelflow.ConfigError, match="not a log level; use DEBUG"):
        otelflow.capture_logging("myapp", level="LOUD")
    with pytest.raises(otelflow.ConfigError, match="logger names as strings"):
        otelflow.capture_logging(logging.getLogger("x"))  # type: ignore[arg-type]


def test_without_telemetry_the_capture_does_nothing(app_logger):
    handle = otelflow.capture_logging("myapp")
    app_logger.warning("nobody listens")
    assert handle.captured == 0
    handle.stop()


def test_the_telemetrys_stop_undoes_its_captures(tmp_path, app_logger):
    root = logging.getLogger()
    before = (list(app_logger.handlers), app_logger.level, list(root.handlers), root.level)
    tel = _start(tmp_path)
    otelflow.capture_logging("myapp", "", level="DEBUG", set_level=True)
    assert len(app_logger.handlers) == len(before[0]) + 1
    tel.stop()
    assert (list(app_logger.handlers), app_logger.level, list(root.handlers), root.level) == before
    app_logger.warning("after the run")  # reaches nothing of otelflow's any more


def test_records_in_thread_pool_and_asyncio_tasks_name_their_task(tmp_path, app_logger):
    import asyncio
    from concurrent.futures import ThreadPoolExecutor

    from otelflow.integrations import asyncio as oasyncio
    from otelflow.integrations import instrument, task_id_of

    tel = _start(tmp_path)
    otelflow.capture_logging("myapp")

    def in_thread(i: int) -> None:
        app_logger.info("thread %d", i)

    async def in_coroutine(i: int) -> None:
        app_logger.info("coroutine %d", i)

    async def main() -> list[str | None]:
        tasks = [oasyncio.create_task(in_coroutine(i)) for i in range(2)]
        await asyncio.gather(*tasks)
        return [oasyncio.task_id_of(t) for t in tasks]

    with instrument(ThreadPoolExecutor(2)) as pool:
        futures = [pool.submit(in_thread, i) for i in range(2)]
        thread_ids = [task_id_of(f) for f in futures]
        for f in futures:
            f.result()
    coroutine_ids = asyncio.run(main())
    app_logger.info("outside")
    tel.stop()
    by_message = {r["message"]: r.get("task_id") for r in read_lines(tel.run_dir, "log")}
    assert [by_message[f"thread {i}"] for i in range(2)] == thread_ids
    assert [by_message[f"coroutine {i}"] for i in range(2)] == coroutine_ids
    assert by_message["outside"] is None and None not in thread_ids + coroutine_ids
