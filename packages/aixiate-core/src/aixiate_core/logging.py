"""structlog for our lines and for the standard library's (uvicorn, SQLAlchemy, alembic).

JSON lines in production, a readable console elsewhere. Request facts bound with
``structlog.contextvars`` by the middleware appear on every line of that request.
"""

import logging
import sys

import structlog
import structlog.tracebacks
from structlog.typing import Processor

from aixiate_core.scrub import scrub_log_event
from aixiate_core.settings import Settings


class _CurrentStderr:
    """Whatever ``sys.stderr`` is at each write (test runners swap it)."""

    def write(self, text: str) -> int:
        return sys.stderr.write(text)

    def flush(self) -> None:
        sys.stderr.flush()


def configure_logging(settings: Settings) -> None:
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        # Last before rendering: no password, token, hash or secret reaches the log,
        # whichever line (ours or a library's) carries it.
        scrub_log_event,
    ]
    renderer: Processor
    if settings.json_logs:
        # Structured tracebacks without local variables: locals may hold passwords/tokens.
        shared.append(
            structlog.processors.ExceptionRenderer(
                structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
            )
        )
        renderer = structlog.processors.JSONRenderer()
    else:
        # Plain tracebacks: rich ones print local variables, which may hold secrets.
        renderer = structlog.dev.ConsoleRenderer(
            colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
        )

    # Our own lines go straight to stderr (a line per request is on the hot path, and the
    # detour through the logging module roughly doubles its cost); the standard
    # library's lines are rendered by the same processors through a logging handler.
    structlog.configure(
        processors=[*shared, renderer],
        logger_factory=structlog.WriteLoggerFactory(file=_CurrentStderr()),  # type: ignore[arg-type]
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[settings.log_level]
        ),
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level)
    # Our middleware writes the access log; uvicorn's would be a second, poorer line.
    logging.getLogger("uvicorn.access").handlers.clear()
    logging.getLogger("uvicorn.access").propagate = False
    logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)
    for name in ("uvicorn", "uvicorn.error"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
