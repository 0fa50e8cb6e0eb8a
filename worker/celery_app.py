"""Celery settings only. The studio imports this to enqueue job ids without importing
torch; `worker.tasks` registers the task that runs them."""

from __future__ import annotations

from celery import Celery

from studio.settings import Settings, get_settings

RUN_JOB = "studio.run_job"
RUN_EXPORT = "studio.run_export"  # same queue and workers as training
RUN_EVAL = "studio.run_eval"
QUEUE = "training"


def make_celery(settings: Settings) -> Celery:
    app = Celery("studio", broker=settings.celery_broker_url)
    app.conf.update(
        task_default_queue=QUEUE,
        task_ignore_result=True,  # the DB is the source of truth, not a result backend
        # Long GPU tasks: ack only after the run, requeue if the process dies, take one
        # job at a time, and a fresh process per job so GPU memory is returned.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=1,
        # A killed pool child has no result to wait for: requeue its job id at once
        # (the default 10 s wait only delays the resume).
        worker_lost_wait=1.0,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=_transport_options(settings),
    )
    return app


def _transport_options(settings: Settings) -> dict:
    if settings.celery_broker_url.startswith("filesystem://"):
        queue, processed, control = (settings.broker_dir / d for d in ("queue", "processed", "control"))
        for folder in (queue, processed, control):
            folder.mkdir(parents=True, exist_ok=True)
        return {
            "control_folder": str(control),  # broadcast (inspect/revoke) exchange files
            "data_folder_in": str(queue),
            "data_folder_out": str(queue),
            "processed_folder": str(processed),
            "store_processed": False,
            "polling_interval": settings.broker_poll_seconds,
        }
    # A redelivered job id is harmless (the DB claim refuses it while the lease is live),
    # so this only bounds how long a lost message waits before it is delivered again.
    timeout = settings.visibility_timeout_seconds
    return {
        "visibility_timeout": timeout,
        # sweep for expired unacked ids a few times per timeout (kombu's default: 100 s)
        "unacked_restore_interval": max(1, min(10, timeout // 4)),
        "unacked_restore_throttle": 1,
    }


app = make_celery(get_settings())


def enqueue(celery: Celery, job_id: int) -> None:
    """Put a job id on the queue: the only thing the broker ever carries."""
    celery.send_task(RUN_JOB, args=[job_id], queue=QUEUE)


def enqueue_export(celery: Celery, export_id: int) -> None:
    """Put an export id on the training queue: exports run on the same workers."""
    celery.send_task(RUN_EXPORT, args=[export_id], queue=QUEUE)


def enqueue_eval(celery: Celery, eval_id: int) -> None:
    """Put an evaluation run's id on the training queue: evaluations run on the same workers."""
    celery.send_task(RUN_EVAL, args=[eval_id], queue=QUEUE)
