"""ONNX Runtime calibration reader over precomputed feeds (torch-free)."""

from __future__ import annotations

from edgefss.errors import InputError


class FeedReader:
    """`onnxruntime.quantization.CalibrationDataReader` protocol over a list of feed dicts.

    ORT only needs `get_next()`; `rewind`, `set_range` and `__len__` let the same reader serve
    several passes (e.g. the sensitivity re-quantizations) and batched calibrators.

    Args:
        feeds: a sequence of {input name: float32 array}: a list, or `pipeline.LazyFeeds`, which
            makes each sample when it is read (kept as given: never copied into a list).
        progress: label of the tqdm bar shown while ORT consumes the feeds ('' = no bar).
    """

    def __init__(self, feeds, progress: str = ""):
        if len(feeds) == 0:
            raise InputError("calibration: no samples; expected at least one episode")
        self.feeds = feeds
        self.progress = progress
        self.start, self.end = 0, len(self.feeds)
        self._bar = None
        self.rewind()

    def __len__(self) -> int:
        return self.end - self.start

    def set_range(self, start_index: int, end_index: int) -> None:
        """Restrict to feeds[start_index:end_index] (ORT's batched-calibration protocol)."""
        if not 0 <= start_index <= end_index <= len(self.feeds):
            raise InputError(f"calibration range [{start_index},{end_index}) outside [0,{len(self.feeds)}]")
        self.start, self.end = start_index, end_index
        self.rewind()

    def rewind(self) -> None:
        self._i = self.start
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def get_next(self):
        if self._i >= self.end:
            if self._bar is not None:
                self._bar.close()
                self._bar = None
            return None
        if self.progress and self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(total=len(self), desc=self.progress, unit="sample", leave=False)
        item = self.feeds[self._i]
        self._i += 1
        if self._bar is not None:
            self._bar.update(1)
        return item
