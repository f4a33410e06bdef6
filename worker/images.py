"""One image of a request: the value that names it everywhere in the service. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass

from worker.contract.messages import ImageRequest


@dataclass(frozen=True, slots=True)
class ImageRef:
    """Image ``index`` of ``request``, with what is derived from the pair."""

    request: ImageRequest
    index: int

    @property
    def url(self) -> str:
        """The image URL."""
        return self.request.image_urls[self.index]

    @property
    def job_id(self) -> str:
        """The request's job id."""
        return self.request.job_id

    @property
    def image_id(self) -> str:
        """``<jobId>:<imageUrl>``, the API's image identifier (and the job record's key)."""
        return f"{self.job_id}:{self.url}"

    @property
    def output_name(self) -> str:
        """``<jobId>.geojson`` for a request of one image, ``<jobId>_<index>.geojson`` for
        several."""
        if len(self.request.image_urls) == 1:
            return f"{self.job_id}.geojson"
        return f"{self.job_id}_{self.index}.geojson"


def images_of(request: ImageRequest) -> list[ImageRef]:
    """Every image of a request, in order."""
    return [ImageRef(request, index) for index in range(len(request.image_urls))]
