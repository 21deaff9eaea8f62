"""Public dataset files, downloaded once and cached under ~/.keras/datasets by `keras.utils.get_file`, as the
TensorFlow tutorials do. Offline, every command takes `--data-dir` with a local copy instead."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from training.errors import DatasetError


@dataclass(frozen=True)
class Remote:
    """One file at a public address: `url`, cached as `filename`; an archive is extracted and `folder` is the
    directory inside it that the dataset's layout starts from ("" for the extraction's root)."""

    url: str
    filename: str
    extract: bool = True
    folder: str = ""

    def fetch(self) -> Path:
        """The local path of the file (or of `folder` in the extracted archive), downloading it if need be."""
        import keras  # only here: reading a local copy must not need Keras

        try:
            path = Path(keras.utils.get_file(self.filename, origin=self.url, extract=self.extract))
        except Exception as error:  # network errors come in many types; all mean the same to the user
            raise DatasetError(
                f"could not download {self.url} ({error}); pass --data-dir with a local copy of the dataset"
            ) from error
        return path / self.folder if self.folder else path
