"""Service configuration: one pydantic-settings class, read once at startup from `APP_*` variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# In a checkout, the committed models; installed as a package, ./models of the working directory.
_REPO_MODELS = Path(__file__).resolve().parents[2] / "models"
_DEFAULT_MODELS = _REPO_MODELS if _REPO_MODELS.is_dir() else Path("models")


class Settings(BaseSettings):
    """Every knob of the service. Environment variable = `APP_` + field name in upper case
    (e.g. `APP_MAX_BATCH_SIZE=16`); lists such as `APP_CORS_ORIGINS` are JSON (`["https://a.example"]`)."""

    model_config = SettingsConfigDict(env_prefix="APP_", frozen=True)

    model_dir: Path = Field(_DEFAULT_MODELS, description="root of models/<task>/<version>/ (TF Serving's layout)")
    model_poll_s: float = Field(5, ge=0, description="look for new, changed and removed versions this often (0: never)")
    versions_served: int = Field(1, ge=1, description="serve the latest N versions of each task (TF Serving's policy)")
    admin_token: SecretStr | None = Field(
        None, description="bearer token that allows the repository API's load and unload (unset: refused)"
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="images per model call at most")
    max_wait_s: float = Field(0.005, ge=0, le=1, description="how long a busy batcher waits to fill a batch")
    max_queue_size: int = Field(256, ge=1, description="images waiting per model before 503 Overloaded")
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="request body limit (413 above)")
    max_json_bytes: int = Field(
        4 * 2**20, ge=1024, description="JSON body limit (413 above): parsing holds the GIL ~15 ms per MB"
    )
    max_image_pixels: int = Field(40_000_000, ge=1, description="pixels per image (413 above), checked before decoding")
    max_files_per_request: int = Field(32, ge=1, description="images in one predict request (413 above)")
    decode_threads: int = Field(2, ge=1, description="threads decoding and resizing small images off the event loop")
    max_decode_bytes: int = Field(
        256 * 2**20, ge=2**20, description="memory one image's decode may take, from its header (413 above)"
    )
    small_decode_bytes: int = Field(
        32 * 2**20, ge=0, description="decodes up to this size run at once; larger ones one at a time, in order"
    )
    max_large_waiting: int = Field(64, ge=1, description="large images waiting to be decoded before 503")
    max_concurrent_batches: int = Field(
        1, ge=1, le=64, description="model calls in flight at once, per model (2 bought nothing on 2 cores)"
    )
    tf_intra_op_threads: int = Field(0, ge=0, description="TensorFlow intra-op threads (0: one per core)")
    tf_inter_op_threads: int = Field(
        1, ge=0, description="TensorFlow inter-op threads (0: TensorFlow's choice; 1 measured fastest on 2 cores)"
    )
    runtime: Literal["auto", "tensorflow", "openvino"] = Field(
        "auto", description="what runs the models: the fastest that matches the SavedModel, or one of them"
    )
    precision: Literal["fp32", "bf16", "int8"] = Field(
        "fp32", description="int8: the quantized models, where their recorded accuracy allows; bf16: explicit only"
    )
    freeze_models: bool = Field(
        True, description="serve each signature frozen (batch norm folded; ~30% faster on CPU) when outputs agree"
    )
    gc_freeze_after_load: bool = Field(
        True, description="gc.freeze() once models are loaded, so full collections skip TensorFlow's objects"
    )
    memory_trim_s: float = Field(
        10, ge=0, description="give freed memory back to the OS this often after uploads (glibc; 0: never)"
    )
    retry_after_s: int = Field(1, ge=1, description="Retry-After header of 503 answers")
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["text", "json"] = "text"
    host: str = "0.0.0.0"
    port: int = Field(8000, ge=1, le=65535)
    grpc_port: int = Field(
        8001, ge=0, le=65535, description="gRPC (Open Inference Protocol, TF Serving, health, reflection); 0: off"
    )
    header_timeout_s: float = Field(10, gt=0, description="time for a request's headers to arrive (408 after)")
    body_timeout_s: float = Field(30, gt=0, description="time a request's body may take to arrive (408 after)")
    keep_alive_s: int = Field(5, ge=1, description="idle keep-alive connections close after this")
    max_connections: int = Field(512, ge=1, description="open connections at most; more are answered 503")
    max_inflight_body_bytes: int = Field(
        256 * 2**20, ge=2**20, description="request bodies in flight at once, by declared size (503 above)"
    )
    drain_s: float = Field(5, ge=0, description="after SIGTERM: serve this long with readiness 503, then stop")
    graceful_timeout_s: int = Field(30, ge=1, description="then: how long accepted requests may take to finish")
    cors_origins: list[str] = Field(default_factory=list, description="origins allowed by CORS; empty: none")
    # --- flagged uploads (app.core.flagged): off unless flagged_dir is set --------------------------------
    flagged_dir: Path | None = Field(
        None,
        description="keep copies of flagged uploads under <dir>/<task>/<sha256>.<ext> with a JSON of the prediction "
        "(unset: off). A privacy choice: users' uploads are then stored on this disk",
    )
    flagged_below: float | None = Field(
        None,
        gt=0,
        le=1,
        description="also keep uploads whose confidence is below this, in distribution or not (unset: only "
        "out-of-distribution ones)",
    )
    flagged_max_bytes: int = Field(
        2**30, ge=2**20, description="disk the kept uploads take in total, all tasks together; oldest deleted first"
    )
    flagged_queue_size: int = Field(256, ge=1, description="uploads waiting to be written at most; more are dropped")
    flagged_queue_bytes: int = Field(
        64 * 2**20, ge=2**20, description="bytes of uploads waiting to be written at most; more are dropped"
    )
    # --- drift (app.core.drift) ----------------------------------------------------------------------------
    drift_window_images: int = Field(500, ge=1, description="recent images per served version that drift reads")
    drift_window_s: float = Field(900, gt=0, description="images older than this leave the drift window")
    drift_min_images: int = Field(50, ge=1, description="images the window needs before drift is tested")
    drift_alpha: float = Field(0.01, gt=0, lt=1, description="significance level of the drift tests, all together")

    @field_validator("flagged_dir", "flagged_below", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        """An empty APP_FLAGGED_DIR (compose passes one when unset) is off, never Path("") (the working
        directory, where uploads would then be written)."""
        if isinstance(value, str) and not value.strip():
            return None
        return value

    # --- end flagged uploads ---------------------------------------------------------------------------------

    @field_validator("admin_token", mode="before")
    @classmethod
    def _empty_token_is_no_token(cls, value: object) -> object:
        """An empty APP_ADMIN_TOKEN (compose passes one when unset) disables the admin API; it must never
        be a token that an empty bearer would match."""
        if isinstance(value, str) and not value.strip():
            return None
        return value
