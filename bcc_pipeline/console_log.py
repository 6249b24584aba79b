"""The run log a person reads in the terminal: one line per step and per message from the
pipeline, every failure as its message alone, no Dagster frames. Every event, stack traces
included, still goes to the Dagster instance (the UI, `dagster debug export`). Set
`loggers: {console: {config: {log_level: DEBUG, stack_traces: true}}}` to see them here too."""

from __future__ import annotations

import logging
import time

import dagster as dg

# Dagster events shown at INFO (Dagster logs most of them at DEBUG); the others only at DEBUG.
_SHOWN = {"STEP_SUCCESS", "ASSET_CHECK_EVALUATION", "RUN_SUCCESS"}
_FAILURES = {"STEP_FAILURE", "RUN_FAILURE", "RESOURCE_INIT_FAILURE", "ENGINE_EVENT"}


def innermost_message(error: object) -> str:
    """`Class: message` of the exception that started a chain of Dagster wrappers, without
    module paths, and without the class of Dagster's own `Failure` (its text says it all)."""
    while getattr(error, "cause", None) is not None:
        error = error.cause
    message = str(getattr(error, "message", error)).strip()
    message = message.removeprefix("dagster._core.definitions.events.Failure: ")
    qualified, colon, text = message.partition(": ")
    if colon and "." in qualified and " " not in qualified:
        return f"{qualified.rsplit('.', 1)[1]}: {text}"
    return message


class ConciseFormatter(logging.Formatter):
    """`HH:MM:SS source: text`, or "" for a line not worth showing."""

    def __init__(self, stack_traces: bool) -> None:
        super().__init__()
        self.stack_traces = stack_traces
        self._said: set[str] = set()
        self._check_steps: set[str] = set()

    def format(self, record: logging.LogRecord) -> str:
        meta = getattr(record, "dagster_meta", None) or {}
        source = meta.get("step_key") or meta.get("resource_name") or meta.get("job_name") or ""
        text = meta.get("orig_message", record.getMessage())
        event = meta.get("dagster_event")
        if event is not None:
            shown = self._event(event, source, text)
            if shown is None:
                return ""
            source, text = shown
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        return f"{stamp} {source}: {text}" if source else f"{stamp} {text}"

    def _event(self, event: dg.DagsterEvent, source: str, text: str) -> tuple[str, str] | None:
        data = event.event_specific_data
        kind = event.event_type_value
        error = getattr(data, "error", None)
        if error is not None and kind in _FAILURES:
            message = innermost_message(error)
            if message in self._said and not self.stack_traces:
                return source, "failed (see above)"
            self._said.add(message)
            return source, "FAILED\n" + (error.to_string() if self.stack_traces else message)
        if kind == "ASSET_CHECK_EVALUATION":
            self._check_steps.add(source)
            verdict = "passed" if data.passed else f"did not pass ({data.severity.value})"
            return "", f"check {data.check_name} on {data.asset_key.to_user_string()}: {verdict}"
        if kind == "STEP_SUCCESS":
            if source in self._check_steps:
                return None
            return source, f"done in {data.duration_ms / 1000:.1f}s"
        return source, text


class _ConciseHandler(logging.StreamHandler):
    """Writes what the formatter returns; an empty string is a line it chose to drop."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
            if text:
                self.stream.write(text + self.terminator)
                self.flush()
        except Exception:  # logging must never break a run; the handler reports it
            self.handleError(record)


class _ConciseFilter(logging.Filter):
    """Above DEBUG: the pipeline's own messages at that level or higher, step ends, check
    results and failures, whatever level Dagster gave them."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        event = (getattr(record, "dagster_meta", None) or {}).get("dagster_event")
        if event is None or self.level <= logging.DEBUG:
            return record.levelno >= self.level
        kind = event.event_type_value
        has_error = getattr(event.event_specific_data, "error", None) is not None
        return kind in _SHOWN or (kind in _FAILURES and has_error)


@dg.logger(
    config_schema={
        "log_level": dg.Field(
            str, default_value="INFO", description="DEBUG also shows every Dagster event."
        ),
        "stack_traces": dg.Field(
            bool, default_value=False, description="Print the stack trace under each failure."
        ),
    },
    description="Concise terminal log: steps, the pipeline's messages, failures in one message.",
)
def concise_console_logger(init_context: dg.InitLoggerContext) -> logging.Logger:
    level = logging.getLevelName(init_context.logger_config["log_level"].upper())
    if not isinstance(level, int):
        raise ValueError(f"log_level must be DEBUG, INFO, WARNING or ERROR; got {level!r}")
    logger = logging.Logger("bcc_pipeline", level=logging.DEBUG)  # the filter decides
    handler = _ConciseHandler()
    handler.setFormatter(ConciseFormatter(init_context.logger_config["stack_traces"]))
    handler.addFilter(_ConciseFilter(level))
    logger.addHandler(handler)
    return logger
