"""Render the build context of an image: `Dockerfile` and its helper, from templates and pins."""

from __future__ import annotations

import posixpath

from ascend_run.inputs.images import ImageSpec, get_image
from ascend_run.inputs.profiles import get_profile
from ascend_run.render.templating import render


def render_dockerfile(image: ImageSpec) -> str:
    profile = get_profile(image.profile)
    return render(
        "images/Dockerfile.j2",
        image=image,
        profile=profile,
        driver_dir=posixpath.dirname(profile.tools.driver_version_file),
        workdir_parent=posixpath.dirname(image.workdir),
        archive_url=image.mindformers_archive.format(ref="${MINDFORMERS_REF}"),
    )


def render_build_context(kind: str) -> dict[str, str]:
    """Files of `images/<kind>/`, by name. What `make generate` writes and the drift test compares."""
    image = get_image(kind)
    return {
        "Dockerfile": render_dockerfile(image),
        "fetch_archive.py": render("images/fetch_archive.py.j2"),
    }
