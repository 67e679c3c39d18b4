"""The package installs on every platform the image is built for: one TensorFlow wheel each."""

from __future__ import annotations

import tomllib

import pytest
from packaging.requirements import Requirement

from tests.helpers import REPO

# (sys_platform, platform_machine) -> the TensorFlow distribution that has a 2.21 wheel there.
PLATFORMS = {
    ("linux", "x86_64"): "tensorflow-cpu",
    ("linux", "aarch64"): "tensorflow",  # tensorflow-cpu has no aarch64 wheel
    ("darwin", "arm64"): "tensorflow",
}


@pytest.mark.parametrize(
    ("platform", "machine"), list(PLATFORMS), ids=[f"{p}-{m}" for p, m in PLATFORMS]
)
def test_exactly_one_tensorflow_with_a_wheel_is_required(platform: str, machine: str) -> None:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    environment = {"sys_platform": platform, "platform_machine": machine}
    required = [
        requirement.name
        for requirement in map(Requirement, project["dependencies"])
        if requirement.name.startswith("tensorflow")
        and (requirement.marker is None or requirement.marker.evaluate(environment))
    ]
    assert required == [PLATFORMS[(platform, machine)]]
