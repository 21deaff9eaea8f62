"""Read a PyTorch state dict saved in the legacy (pre-1.6, non-zip) format without PyTorch.

The legacy `.pth` layout is a sequence of pickles followed by raw storages:

1. magic number, protocol version and system info (three small pickles);
2. the state dict itself, whose tensors refer to storages through pickle *persistent ids*
   `("storage", <torch.FloatStorage>, key, location, numel)` and are rebuilt by
   `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`;
3. a pickled list of storage keys, then for each key: its element count as a little-endian int64
   followed by the raw little-endian elements.

Only the handful of globals a plain state dict needs are allowed; anything else is refused, so loading
an untrusted file cannot run code the way `pickle.load` would.
"""

from __future__ import annotations

import collections
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

_MAGIC = 0x1950A86A20F9469CFC6C
_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ShortStorage": np.int16,
    "CharStorage": np.int8,
    "ByteStorage": np.uint8,
    "BoolStorage": np.bool_,
}


@dataclass
class _Storage:
    dtype: np.dtype[Any]
    numel: int
    data: np.ndarray | None = None


@dataclass
class _TensorRef:
    storage: _Storage
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]

    def materialize(self) -> np.ndarray:
        if self.storage.data is None:
            raise ValueError("tensor refers to a storage that the file does not contain")
        itemsize = self.storage.data.itemsize
        flat = self.storage.data[self.offset :]
        strides = tuple(s * itemsize for s in self.stride)
        return np.lib.stride_tricks.as_strided(flat, shape=self.size, strides=strides).copy()


class _StorageType:
    def __init__(self, name: str) -> None:
        self.dtype = np.dtype(_DTYPES[name])


def _rebuild_tensor_v2(
    storage: _Storage, offset: int, size: tuple[int, ...], stride: tuple[int, ...], *_: Any
) -> _TensorRef:
    return _TensorRef(storage, offset, tuple(size), tuple(stride))


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: IO[bytes], storages: dict[str, _Storage]) -> None:
        super().__init__(file)
        self._storages = storages

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _DTYPES:
            return _StorageType(name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: not part of a plain state dict")

    def persistent_load(self, pid: Any) -> _Storage:
        kind, storage_type, key, _location, numel = pid[:5]
        if kind != "storage" or not isinstance(storage_type, _StorageType):
            raise pickle.UnpicklingError(f"unexpected persistent id {pid!r}")
        return self._storages.setdefault(key, _Storage(storage_type.dtype, int(numel)))


def load_state_dict(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the legacy-format state dict at `path` as a NumPy array, in file order."""
    with path.open("rb") as file:
        if pickle.load(file) != _MAGIC:
            raise ValueError(f"{path} is not a legacy-format PyTorch file (zip-format files need torch.load)")
        pickle.load(file)  # protocol version
        pickle.load(file)  # system info (endianness, type sizes)
        storages: dict[str, _Storage] = {}
        state = _Unpickler(file, storages).load()
        for key in pickle.load(file):
            storage = storages[key]
            numel = int.from_bytes(file.read(8), "little")
            raw = file.read(numel * storage.dtype.itemsize)
            if len(raw) != numel * storage.dtype.itemsize:
                raise ValueError(f"{path} is truncated in storage {key}")
            storage.data = np.frombuffer(raw, dtype=storage.dtype.newbyteorder("<"))
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds a {type(state).__name__}, not a state dict")
    return {name: ref.materialize() for name, ref in state.items()}
