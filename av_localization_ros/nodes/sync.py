"""Image + camera_info pairing for the DDS shell (the rclpy shell uses message_filters).

Same policy as ``message_filters.ApproximateTimeSynchronizer`` with a slop, except that an image
that cannot be paired is not silently discarded: once it falls out of the queue it is passed on
with ``camera_info=None`` so the logic counts it (``image_without_camera_info``) and still runs.
"""
from __future__ import annotations

from collections import deque
from typing import Any, Callable

from ..bag.messages import stamp_to_ns


class ImageInfoSync:
    def __init__(self, callback: Callable[[Any, Any | None], None], slop_s: float = 0.05,
                 queue_size: int = 10):
        self.callback = callback
        self.slop_ns = int(slop_s * 1e9)
        self.infos: deque = deque(maxlen=max(queue_size, 1))
        self.images: deque = deque()
        self.queue_size = max(queue_size, 1)
        self.unpaired = 0

    def _match(self, image) -> Any | None:
        t = stamp_to_ns(image.header.stamp)
        best, best_dt = None, None
        for info in self.infos:
            dt = abs(stamp_to_ns(info.header.stamp) - t)
            if dt <= self.slop_ns and (best_dt is None or dt < best_dt):
                best, best_dt = info, dt
        return best

    def add_info(self, info) -> None:
        self.infos.append(info)
        # images waiting for this info, in arrival order
        while self.images:
            info_match = self._match(self.images[0])
            if info_match is None:
                newest = stamp_to_ns(info.header.stamp)
                if stamp_to_ns(self.images[0].header.stamp) + self.slop_ns < newest:
                    self._emit_unpaired()  # infos arrive in order: this image will never pair
                    continue
                break
            self.callback(self.images.popleft(), info_match)

    def add_image(self, image) -> None:
        info = self._match(image) if not self.images else None
        if info is not None:
            self.callback(image, info)
            return
        self.images.append(image)
        while len(self.images) > self.queue_size:
            self._emit_unpaired()

    def _emit_unpaired(self) -> None:
        self.unpaired += 1
        self.callback(self.images.popleft(), None)
