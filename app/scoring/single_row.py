"""LightGBM's C fast path for one row at a time (``LGBM_BoosterPredictForMatSingleRowFast``).

``Booster.predict`` spends about 25 µs in Python per call (argument checks, array conversion,
buffer allocation) around 10 µs of tree walking. A single-customer API call predicts exactly one
row, so that overhead is most of its model cost. The fast path sets the prediction up once per
model (``...FastInit``) and then costs one ctypes call per row into a preallocated buffer.

Only documented C API entry points are used (LightGBM's ``c_api.h``), through our own handle on
the library the ``lightgbm`` package loaded (its path is the one private name we read), so none
of the package's state is touched. ``ScoringModel.warm_up`` checks its answers against
``Booster.predict`` when a model is loaded.
"""

from __future__ import annotations

import ctypes
import threading
from typing import Final

import lightgbm
import numpy as np
import numpy.typing as npt
from lightgbm.libpath import _LIB as _PACKAGE_LIBRARY

PREDICT_RAW_SCORE: Final = 1
PREDICT_LEAF_INDEX: Final = 2
_DTYPE_FLOAT64: Final = 1


def _library() -> ctypes.CDLL:
    # The package loads lib_lightgbm once; a second CDLL on the same path shares the loaded
    # library (dlopen reference count) but gives us our own function objects to type.
    library = ctypes.CDLL(_PACKAGE_LIBRARY._name)
    library.LGBM_GetLastError.restype = ctypes.c_char_p
    library.LGBM_BoosterPredictForMatSingleRowFastInit.argtypes = [
        ctypes.c_void_p,  # booster
        ctypes.c_int,  # predict_type
        ctypes.c_int,  # start_iteration
        ctypes.c_int,  # num_iteration
        ctypes.c_int,  # data_type
        ctypes.c_int32,  # ncol
        ctypes.c_char_p,  # parameters
        ctypes.POINTER(ctypes.c_void_p),  # out: FastConfigHandle
    ]
    library.LGBM_BoosterPredictForMatSingleRowFast.argtypes = [
        ctypes.c_void_p,  # FastConfigHandle
        ctypes.c_void_p,  # data: one row, float64
        ctypes.POINTER(ctypes.c_int64),  # out_len
        ctypes.c_void_p,  # out_result: float64
    ]
    library.LGBM_FastConfigFree.argtypes = [ctypes.c_void_p]
    return library


_LIBRARY: Final = _library()


def _check(status: int) -> None:
    if status != 0:
        message = _LIBRARY.LGBM_GetLastError() or b"unknown error"
        raise lightgbm.basic.LightGBMError(message.decode(errors="replace"))


class SingleRowPredictor:
    """Raw scores or leaf indices of one row at a time, on one thread, without Python overhead.

    Calls are serialised by a lock: the output buffer is shared, and LightGBM's fast-config
    handle is not meant for concurrent use.
    """

    def __init__(
        self,
        booster: lightgbm.Booster,
        *,
        predict_type: int,
        num_iteration: int,
        n_outputs: int,
    ) -> None:
        self.n_features = booster.num_feature()
        self._handle = ctypes.c_void_p()
        _check(
            _LIBRARY.LGBM_BoosterPredictForMatSingleRowFastInit(
                booster._handle,
                predict_type,
                0,
                num_iteration,
                _DTYPE_FLOAT64,
                self.n_features,
                b"num_threads=1",
                ctypes.byref(self._handle),
            )
        )
        # Preallocated buffers with their addresses taken once: ``ndarray.ctypes`` costs more
        # per call than the tree walk of a small model.
        self._row = np.empty(self.n_features, dtype=np.float64)
        self._row_address = self._row.ctypes.data
        self._out = np.empty(n_outputs, dtype=np.float64)
        self._out_address = self._out.ctypes.data
        self._out_len = ctypes.c_int64()
        self._out_len_ref = ctypes.byref(self._out_len)
        self._lock = threading.Lock()

    def __call__(self, row: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        """The outputs for one row of ``n_features`` float64 values (a copy)."""
        if row.shape != (self.n_features,) or row.dtype != np.float64:
            raise ValueError(f"expected {self.n_features} float64 values, got {row.shape}")
        with self._lock:
            self._row[:] = row
            _check(
                _LIBRARY.LGBM_BoosterPredictForMatSingleRowFast(
                    self._handle, self._row_address, self._out_len_ref, self._out_address
                )
            )
            if self._out_len.value != len(self._out):
                raise lightgbm.basic.LightGBMError(
                    f"expected {len(self._out)} outputs, LightGBM wrote {self._out_len.value}"
                )
            return self._out.copy()

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            _LIBRARY.LGBM_FastConfigFree(handle)
            handle.value = None
