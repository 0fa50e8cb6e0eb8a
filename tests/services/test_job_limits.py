"""training.devices is bounded by what the workers have: refused at launch when no live
worker has that many, and failed with the reason by a worker that lacks them."""

from __future__ import annotations

import pytest

from studio import workers
from studio.core.config import ConfigError
from studio.core.estimate import GIB, Device, check_devices, device_capacity
from studio.models import utcnow
from studio.services import jobs
from tests.conftest import upload_file

TWO_GPUS = Device(True, "NVIDIA A100", 80 * GIB, True, True, gpus=2)
FOUR_CORES = Device(False, "CPU", 8 * GIB, False, False, cpus=4)


def test_launch_is_refused_when_no_live_worker_has_the_devices(ctx, alpaca_file):
    dataset_id = upload_file(ctx, alpaca_file)
    four = {"training": {"devices": 4}}
    # no worker yet: the job waits in the queue like any other
    assert jobs.preview_launch(ctx, dataset_id, "demo", four).runs_on == "no worker yet"
    workers.register(ctx.engine, "gpu@box", TWO_GPUS, utcnow())
    for call in (jobs.preview_launch, jobs.create_job):
        with pytest.raises(ConfigError) as caught:
            call(ctx, dataset_id, "demo", four)
        assert caught.value.errors[0].startswith("training.devices: 4 devices asked for, but the most any running "
                                                 "worker has is 2"), caught.value.errors
    assert jobs.list_jobs(ctx) == []
    assert jobs.preview_launch(ctx, dataset_id, "demo", {"training": {"devices": 2}}).steps > 0
    workers.register(ctx.engine, "cpu@big", FOUR_CORES, utcnow())  # CPU processes, one a core
    assert jobs.preview_launch(ctx, dataset_id, "demo", four).steps > 0


def test_capacity_of_a_device():
    assert device_capacity(TWO_GPUS) == 2 and device_capacity(FOUR_CORES) == 4
    assert device_capacity(Device(False, "CPU", GIB, False, False)) == 64  # a worker from before `cpus`
    from studio.core.config import TrainingSection

    assert check_devices(TrainingSection(devices=3), TWO_GPUS) == (
        "training.devices: the job asks for 3 devices; this worker has 2 GPUs"
    )
    assert check_devices(TrainingSection(devices=2), TWO_GPUS) is None


def test_a_worker_without_the_devices_fails_the_job_saying_so(ctx, alpaca_file, monkeypatch):
    from worker import tasks

    monkeypatch.setattr(tasks, "get_settings", lambda: ctx.settings)
    monkeypatch.setattr(tasks, "detect_device", lambda: FOUR_CORES)
    job = jobs.create_job(ctx, upload_file(ctx, alpaca_file), "demo", {"training": {"devices": 8}})
    assert tasks.run_job(job.id) == "failed"
    done = jobs.get_job(ctx, job.id)
    assert done.error == (
        "training.devices: the job asks for 8 devices; this worker has 4 CPU cores: lower training.devices or run "
        "it on a worker that has them"
    )
