"""Image definitions (train, infer) as typed data: pinned versions, base image, MindFormers ref."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Literal

from pydantic import Field
from ruamel.yaml import YAML

from ascend_run.errors import ConfigError
from ascend_run.inputs.common import Strict

ImageKind = Literal["train", "infer"]
IMAGE_KINDS: tuple[str, ...] = ("train", "infer")


class ImageSpec(Strict):
    kind: ImageKind
    description: str
    profile: str
    published: str
    repository: str
    python_version: str
    mindspore_version: str
    cann_version: str
    driver_version: str
    base_image: str
    mindformers_ref: str
    mindformers_archive: str
    workdir: str
    extra_pip: tuple[str, ...] = Field(default_factory=tuple)

    @property
    def tag(self) -> str:
        """Default tag of a locally built image: versions in the tag, so two pins never collide."""
        return f"{self.repository}:ms{self.mindspore_version}-cann{self.cann_version.lower()}"

    def build_args(self) -> dict[str, str]:
        """The Dockerfile's ARG defaults; `image build` may override any of them."""
        return {
            "CANN_BASE_IMAGE": self.base_image,
            "MINDSPORE_VERSION": self.mindspore_version,
            "MINDFORMERS_REF": self.mindformers_ref,
            "MINDFORMERS_ARCHIVE_URL": self.mindformers_archive.format(ref=self.mindformers_ref),
        }


@cache
def all_images() -> dict[str, ImageSpec]:
    text = (resources.files("ascend_run") / "data" / "images.yaml").read_text(encoding="utf-8")
    data = YAML(typ="safe").load(text)
    return {kind: ImageSpec.model_validate({"kind": kind, **spec}) for kind, spec in data.items()}


def get_image(kind: str) -> ImageSpec:
    images = all_images()
    if kind not in images:
        raise ConfigError(f"unknown image kind {kind!r}", fix=f"use one of: {', '.join(images)}")
    return images[kind]
