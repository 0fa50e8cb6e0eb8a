"""SQLModel tables, each next to the schema the API returns for it.

The DB is the source of truth for a job: the broker only carries its id. Metric points,
samples and checkpoints carry natural unique keys so an event replayed is stored once.
"""

from __future__ import annotations

import enum
from datetime import datetime, timezone
from typing import Any, Optional

from sqlalchemy import JSON, Column, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


class JobStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled)


# --- datasets -------------------------------------------------------------------------


class Dataset(SQLModel, table=True):
    __tablename__ = "dataset"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow)


class DatasetVersion(SQLModel, table=True):
    """An immutable snapshot of a dataset's rows (JSONL in the artifact store)."""

    __tablename__ = "dataset_version"
    __table_args__ = (UniqueConstraint("dataset_id", "number"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    dataset_id: int = Field(foreign_key="dataset.id", index=True)
    number: int = Field(description="1, 2, 3... within its dataset")
    content_hash: str = Field(max_length=64, description="sha256 of the snapshot file")
    snapshot_path: str = Field(description="relative to the artifact root")
    row_count: int
    source_filename: str = Field(default="", max_length=500)
    source_format: str = Field(default="", max_length=40)
    note: str = Field(default="", max_length=500, description="what changed from the parent")
    parent_id: Optional[int] = Field(
        default=None, foreign_key="dataset_version.id", description="the version this one was edited from"
    )
    kind: str = Field(default="alpaca", max_length=16, description="row shape: 'alpaca' or 'chat'")
    validation_rows: int = Field(default=0, description="rows a split marked 'validation' (0: no split)")
    created_at: datetime = Field(default_factory=utcnow)


class DatasetPublic(SQLModel):
    id: int
    name: str
    created_at: datetime
    version_id: int
    version: int
    row_count: int
    content_hash: str
    source_filename: str
    source_format: str
    kind: str = "alpaca"
    validation_rows: int = 0


class DatasetVersionPublic(SQLModel):
    """One entry of a dataset's history."""

    id: int
    dataset_id: int
    number: int
    content_hash: str
    row_count: int
    kind: str
    note: str
    parent_id: Optional[int]
    validation_rows: int
    source_filename: str
    source_format: str
    created_at: datetime
    used_by_jobs: int = 0  # a version a job uses is frozen; edits always make a new one


# --- jobs -----------------------------------------------------------------------------


class Job(SQLModel, table=True):
    __tablename__ = "job"
    __table_args__ = (Index("ix_job_status_lease", "status", "lease_expires_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(default="", max_length=200)
    dataset_version_id: int = Field(foreign_key="dataset_version.id", index=True)
    base_model: str = Field(max_length=500)
    config_json: str = Field(sa_column=Column(Text, nullable=False))
    config_version: int = 1
    status: JobStatus = Field(default=JobStatus.queued, index=True)
    attempts: int = 0
    max_attempts: int = 3
    lease_owner: Optional[str] = Field(default=None, max_length=200)
    lease_expires_at: Optional[float] = Field(default=None, description="unix seconds")
    cancel_requested: bool = False
    step: int = 0
    total_steps: int = 0
    error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    cloned_from: Optional[int] = Field(default=None, foreign_key="job.id")
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class JobPublic(SQLModel):
    id: int
    name: str
    dataset_version_id: int
    base_model: str
    config: dict[str, Any]
    status: JobStatus
    attempts: int
    max_attempts: int
    step: int
    total_steps: int
    cancel_requested: bool
    error: Optional[str]
    cloned_from: Optional[int]
    created_at: datetime
    started_at: Optional[datetime]
    finished_at: Optional[datetime]
    eta_seconds: Optional[float] = None  # running jobs: from the recent step rate


class MetricPoint(SQLModel, table=True):
    """One logged step: split 'train' (per step) or 'eval' (per evaluation)."""

    __tablename__ = "metric_point"
    __table_args__ = (UniqueConstraint("job_id", "split", "step"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    split: str = Field(max_length=16)
    step: int
    loss: Optional[float] = None
    learning_rate: Optional[float] = None
    grad_norm: Optional[float] = None
    exact_match: Optional[float] = None
    tokens_per_second: Optional[float] = None
    epoch: Optional[float] = None
    recorded_at: float = Field(description="unix seconds when the worker measured it")


class MetricPublic(SQLModel):
    step: int
    split: str
    loss: Optional[float]
    learning_rate: Optional[float]
    grad_norm: Optional[float]
    exact_match: Optional[float]
    tokens_per_second: Optional[float]
    epoch: Optional[float]
    perplexity: Optional[float] = None  # exp(loss) for eval points


class Sample(SQLModel, table=True):
    """A generation for one probe prompt at one step."""

    __tablename__ = "sample"
    __table_args__ = (UniqueConstraint("job_id", "step", "probe_index"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    step: int
    probe_index: int
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    output: str = Field(sa_column=Column(Text, nullable=False))
    reference: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))


class SamplePublic(SQLModel):
    step: int
    probe_index: int
    prompt: str
    output: str
    reference: Optional[str]


class Checkpoint(SQLModel, table=True):
    __tablename__ = "checkpoint"
    __table_args__ = (UniqueConstraint("job_id", "step", "final"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    step: int
    path: str = Field(description="relative to the artifact root")
    eval_loss: Optional[float] = None
    final: bool = False
    created_at: datetime = Field(default_factory=utcnow)


class CheckpointPublic(SQLModel):
    step: int
    path: str
    eval_loss: Optional[float]
    final: bool
    created_at: datetime
    on_disk: bool = True  # False once "keep last" (or a person) deleted its folder


class JobLog(SQLModel, table=True):
    __tablename__ = "job_log"
    __table_args__ = (UniqueConstraint("job_id", "key"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    key: str = Field(max_length=64, description="'attempt:n', unique per job: replays store once")
    level: str = Field(default="info", max_length=16)
    message: str = Field(sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)


# --- accounts -------------------------------------------------------------------------


class User(SQLModel, table=True):
    """A person who logs in: admin, trainer or rater. Disabled users keep their history."""

    __tablename__ = "user_account"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=64, unique=True, index=True)
    role: str = Field(max_length=16, description="admin, trainer or rater")
    password_hash: str = Field(max_length=200, description="Argon2id")
    disabled: bool = False
    created_at: datetime = Field(default_factory=utcnow)
    last_login_at: Optional[datetime] = None


class UserPublic(SQLModel):
    id: int
    name: str
    role: str
    disabled: bool
    created_at: datetime
    last_login_at: Optional[datetime]


class ApiToken(SQLModel, table=True):
    """An API token for /api and /v1 (`Authorization: Bearer`). Only its sha256 is stored:
    the token itself is shown once."""

    __tablename__ = "api_token"
    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    prefix: str = Field(max_length=16, description="the first characters, to tell tokens apart")
    created_at: datetime = Field(default_factory=utcnow)
    last_used_at: Optional[datetime] = None
    revoked: bool = False


class LoginSession(SQLModel, table=True):
    """A browser login. The cookie holds a random value; the DB holds its sha256, so a
    logout or a disabled user ends the session at once."""

    __tablename__ = "login_session"
    id: Optional[int] = Field(default=None, primary_key=True)
    user_id: int = Field(foreign_key="user_account.id", index=True)
    token_hash: str = Field(max_length=64, unique=True, index=True)
    created_at: datetime = Field(default_factory=utcnow)
    expires_at: float = Field(description="unix seconds")


class AuditEvent(SQLModel, table=True):
    """Who did what, and when: logins, uploads, launches, cancels, exports, user changes."""

    __tablename__ = "audit_event"
    id: Optional[int] = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, index=True)
    actor: str = Field(max_length=64, description="user name; 'local' in single-user mode")
    action: str = Field(max_length=64)
    target: str = Field(default="", max_length=500)
    outcome: str = Field(default="ok", max_length=16)
    ip: str = Field(default="", max_length=64)


class AuditPublic(SQLModel):
    at: datetime
    actor: str
    action: str
    target: str
    outcome: str
    ip: str


# --- workers --------------------------------------------------------------------------


class WorkerNode(SQLModel, table=True):
    """A running worker and the device it trains on, refreshed while it lives, so the
    Train tab sizes a job for the machine that will run it, not the web host."""

    __tablename__ = "worker"
    name: str = Field(primary_key=True, max_length=200, description="Celery node name, e.g. trainer@gpu-host")
    device_json: str = Field(sa_column=Column(Text, nullable=False))
    started_at: datetime = Field(default_factory=utcnow)
    last_seen: float = Field(index=True, description="unix seconds")


class WorkerPublic(SQLModel):
    name: str
    device: str
    cuda: bool
    gpus: int
    memory_gib: float
    bf16: bool
    bitsandbytes: bool
    started_at: datetime
    seconds_since_seen: float
    alive: bool
    training_flops: float = Field(default=0.0, description="Training FLOP/s its calibration run measured (0: not yet)")


# --- exports --------------------------------------------------------------------------


class ExportStatus(str, enum.Enum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"

    @property
    def finished(self) -> bool:
        return self in (ExportStatus.succeeded, ExportStatus.failed)


class Export(SQLModel, table=True):
    """A merged model, adapter zip or GGUF file made from a job's result or checkpoint,
    built and verified on a worker; offered for download only once its checks passed."""

    __tablename__ = "export"
    __table_args__ = (Index("ix_export_status_lease", "status", "lease_expires_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    job_id: int = Field(foreign_key="job.id", index=True)
    checkpoint_step: Optional[int] = Field(default=None, description="None: the job's final result")
    kind: str = Field(max_length=16, description="merged, adapter or gguf")
    quantization: Optional[str] = Field(default=None, max_length=16, description="gguf only: f16 or q8_0")
    status: ExportStatus = Field(default=ExportStatus.queued, index=True)
    progress: float = Field(default=0.0, description="0..1")
    stage: str = Field(default="", max_length=200, description="what the worker is doing now")
    path: Optional[str] = Field(default=None, max_length=500, description="the result, relative to the artifact root")
    size_bytes: Optional[int] = None
    checks_json: str = Field(default="{}", sa_column=Column(Text, nullable=False))
    error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    attempts: int = 0
    max_attempts: int = 3
    lease_owner: Optional[str] = Field(default=None, max_length=200)
    lease_expires_at: Optional[float] = Field(default=None, description="unix seconds")
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class ExportPublic(SQLModel):
    id: int
    job_id: int
    model_id: str  # job-N or job-N/checkpoint-S
    checkpoint_step: Optional[int]
    kind: str
    quantization: Optional[str]
    status: ExportStatus
    progress: float
    stage: str
    size_bytes: Optional[int]
    filename: Optional[str]  # what a download is saved as
    checks: dict[str, Any]
    error: Optional[str]
    created_at: datetime
    started_at: Optional[datetime]
    finished_at: Optional[datetime]


# --- chat -----------------------------------------------------------------------------


class ChatRequest(SQLModel, table=True):
    """One answered chat or /v1 request: the request log behind the Chat tab's figures."""

    __tablename__ = "chat_request"
    id: Optional[int] = Field(default=None, primary_key=True)
    created_at: datetime = Field(default_factory=utcnow, index=True)
    user_name: str = Field(default="", max_length=64)
    endpoint: str = Field(max_length=32, description="chat, completions or studio (the Chat tab, /api/chat)")
    model: str = Field(max_length=200, index=True)
    status: str = Field(default="ok", max_length=16, description="ok, or error")
    latency_ms: float = 0.0
    ttft_ms: Optional[float] = Field(default=None, description="time to the first token")
    tokens_in: int = 0
    tokens_out: int = 0
    cache_hit: bool = False
    filtered: bool = Field(default=False, description="blocked by the safety filter, on the way in or out")


class SafetyRule(SQLModel, table=True):
    """A blocklist entry, checked on requests and replies: a word (whole word, any case)
    or a regular expression."""

    __tablename__ = "safety_rule"
    id: Optional[int] = Field(default=None, primary_key=True)
    kind: str = Field(max_length=8, description="word or regex")
    pattern: str = Field(max_length=500)
    created_by: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class SafetyRulePublic(SQLModel):
    id: int
    kind: str
    pattern: str
    created_by: str
    created_at: datetime


# --- evaluations ------------------------------------------------------------------------


class EvalRun(SQLModel, table=True):
    """Automatic metrics for a few models on one evaluation set, run on a worker like a
    job (claim, lease, cancel flag, progress); answers and scores are stored per row."""

    __tablename__ = "eval_run"
    __table_args__ = (Index("ix_eval_run_status_lease", "status", "lease_expires_at"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    status: JobStatus = Field(default=JobStatus.queued, index=True)
    progress: float = Field(default=0.0, description="0..1")
    stage: str = Field(default="", max_length=200, description="what the worker is doing now")
    models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                              description="model ids, as asked")
    specs: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                                        description="each model resolved for the engine when the run was made")
    dataset_id: Optional[int] = Field(default=None, foreign_key="dataset.id", index=True)
    dataset_version_id: Optional[int] = Field(default=None, foreign_key="dataset_version.id")
    split: str = Field(default="validation", max_length=16, description="validation or all")
    max_rows: int = 256
    row_count: int = 0
    sampling: dict[str, Any] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False))
    results: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                                          description="[{model, metrics, categories}] once it succeeded")
    error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    created_by: str = Field(default="", max_length=64)
    cancel_requested: bool = False
    attempts: int = 0
    max_attempts: int = 3
    lease_owner: Optional[str] = Field(default=None, max_length=200)
    lease_expires_at: Optional[float] = Field(default=None, description="unix seconds")
    created_at: datetime = Field(default_factory=utcnow)
    started_at: Optional[datetime] = None
    finished_at: Optional[datetime] = None


class EvalRow(SQLModel, table=True):
    """One prompt of an evaluation run, with each model's answer and scores."""

    __tablename__ = "eval_row"
    __table_args__ = (UniqueConstraint("eval_id", "index"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    eval_id: int = Field(foreign_key="eval_run.id", index=True)
    index: int
    prompt: str = Field(sa_column=Column(Text, nullable=False), description="the user text exactly as given")
    input: str = Field(default="", sa_column=Column(Text, nullable=False), description="Alpaca's input field")
    context: list[dict[str, Any]] = Field(default_factory=list, sa_column=Column(JSON, nullable=False),
                                          description="a chat row's earlier turns, before the prompt")
    reference: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    category: Optional[str] = Field(default=None, max_length=200)
    outputs: dict[str, str] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False),
                                    description="{model id: answer}")
    scores: dict[str, dict[str, Optional[float]]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False),
                                                          description="{model id: {metric: value}}")


class EvalResult(SQLModel):
    model: str
    metrics: dict[str, Optional[float]]
    categories: dict[str, dict[str, Optional[float]]] = {}  # the same metrics per row category


class EvalPublic(SQLModel):
    id: int
    status: JobStatus
    progress: float
    stage: str
    models: list[str]
    dataset_id: Optional[int]
    dataset_version_id: Optional[int]
    split: str
    max_rows: int
    row_count: int
    sampling: dict[str, Any]
    results: list[EvalResult]
    error: Optional[str]
    created_by: str
    cancel_requested: bool
    created_at: datetime
    started_at: Optional[datetime]
    finished_at: Optional[datetime]


class EvalRowPublic(SQLModel):
    index: int
    prompt: str
    input: str
    context: list[dict[str, Any]] = []
    reference: Optional[str]
    category: Optional[str]
    outputs: dict[str, str]
    scores: dict[str, dict[str, Optional[float]]]


# --- rating campaigns -------------------------------------------------------------------


class Campaign(SQLModel, table=True):
    """Blind human rating of a few models' answers, generated ahead of time by an
    evaluation run; items are made from its rows once it has succeeded."""

    __tablename__ = "campaign"
    id: Optional[int] = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    status: str = Field(default="generating", max_length=16, index=True,
                        description="generating (the answers), open, closed or failed")
    models: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    mode: str = Field(default="pairwise", max_length=16, description="pairwise, likert or both")
    criteria: list[str] = Field(default_factory=list, sa_column=Column(JSON, nullable=False))
    ratings_per_item: int = 3
    pairs_per_prompt: int = 1
    eval_id: int = Field(foreign_key="eval_run.id", index=True)
    seed: int = Field(description="the A/B coin's and the schedule's seed, drawn at creation")
    salt: str = Field(max_length=64, description="keys the pseudonymous rater ids in exports")
    error: Optional[str] = Field(default=None, sa_column=Column(Text, nullable=True))
    created_by: str = Field(default="", max_length=64)
    created_at: datetime = Field(default_factory=utcnow)


class CampaignItem(SQLModel, table=True):
    """One prompt and two contestants' answers, with the side each is shown on."""

    __tablename__ = "campaign_item"
    __table_args__ = (UniqueConstraint("campaign_id", "position"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    position: int = Field(description="order in the schedule")
    prompt: str = Field(sa_column=Column(Text, nullable=False))
    input: str = Field(default="", sa_column=Column(Text, nullable=False))
    model_a: str = Field(max_length=300)
    model_b: str = Field(max_length=300)
    answer_a: str = Field(sa_column=Column(Text, nullable=False))
    answer_b: str = Field(sa_column=Column(Text, nullable=False))


class CampaignAssignment(SQLModel, table=True):
    """An item handed to a rater: only assigned items may be rated, none twice."""

    __tablename__ = "campaign_assignment"
    __table_args__ = (UniqueConstraint("item_id", "rater"), Index("ix_campaign_assignment_rater", "campaign_id", "rater"))
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id")
    item_id: int = Field(foreign_key="campaign_item.id", index=True)
    rater: str = Field(max_length=64)
    assigned_at: float = Field(description="unix seconds; an unrated one stops holding the item after a while")
    rated: bool = False


class Rating(SQLModel, table=True):
    """A rater's judgement of one item; one per (item, rater), so a replayed POST is a no-op."""

    __tablename__ = "rating"
    __table_args__ = (UniqueConstraint("item_id", "rater"),)
    id: Optional[int] = Field(default=None, primary_key=True)
    campaign_id: int = Field(foreign_key="campaign.id", index=True)
    item_id: int = Field(foreign_key="campaign_item.id", index=True)
    rater: str = Field(max_length=64)
    winner: Optional[str] = Field(default=None, max_length=16, description="A, B, tie or both_bad")
    scores: dict[str, dict[str, int]] = Field(default_factory=dict, sa_column=Column(JSON, nullable=False),
                                              description='{"A": {criterion: 1-5}, "B": {...}}')
    comment: str = Field(default="", sa_column=Column(Text, nullable=False))
    created_at: datetime = Field(default_factory=utcnow)
