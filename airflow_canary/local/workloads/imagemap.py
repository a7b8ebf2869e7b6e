"""Image map of the local mesh: which local command stands in for a container image (``--image-map`` YAML)."""

from __future__ import annotations

import os
from pathlib import Path

import yaml


class ImageMapError(ValueError):
    """The image map file is missing or not a mapping of image -> list of strings."""


def load_image_map(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a YAML mapping ``image: [command, arg, ...]``.

    Example::

        your-docker-repo/model-runner:v1: [airflow-canary, serve-model, --version, v1]
        your-docker-repo/model-runner: [python, -m, my_server]   # any tag
    """
    file = Path(path)
    try:
        data = yaml.safe_load(file.read_text())
    except OSError as exc:
        raise ImageMapError(f"cannot read image map {str(file)!r}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ImageMapError(f"image map {str(file)!r} is not valid YAML: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ImageMapError(
            f"image map {str(file)!r} must be a mapping of image to command list, got {type(data).__name__}"
        )
    result: dict[str, list[str]] = {}
    for image, command in data.items():
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, (str, int, float)) for a in command)
        ):
            raise ImageMapError(
                f"image map {str(file)!r}: command for image {image!r} must be a non-empty list of strings, "
                f"got {command!r}"
            )
        result[str(image)] = [str(a) for a in command]
    return result


def command_for_image(image_map: dict[str, list[str]], image: str) -> list[str] | None:
    """The mapped command for ``image``: an exact entry first, then the entry for its repository (any tag)."""
    if image in image_map:
        return list(image_map[image])
    repository = image.split("@", 1)[0]
    if ":" in repository.rsplit("/", 1)[-1]:
        repository = repository.rsplit(":", 1)[0]
    found = image_map.get(repository)
    return list(found) if found is not None else None
