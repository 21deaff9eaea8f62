"""Image-classification inference service: FastAPI app serving the SavedModels under `models/`."""

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _package_version

DISTRIBUTION = "image-classifier-service"


def service_version() -> str:
    """The installed package's version (pyproject.toml), as `GET /v2` and the OpenAPI document state it."""
    try:
        return _package_version(DISTRIBUTION)
    except PackageNotFoundError:  # running from a checkout that was never installed
        return "unknown"
