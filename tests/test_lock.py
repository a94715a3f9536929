"""uv.lock installs beyond one platform: Linux x86_64 and aarch64 servers, Apple-silicon laptops."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
from helpers import PROJECT

PLATFORMS = {  # marker the lock resolves for -> a torch wheel tag that installs there
    "platform_machine == 'x86_64' and sys_platform == 'linux'": r"manylinux[0-9_]*_x86_64\.whl",
    "platform_machine == 'aarch64' and sys_platform == 'linux'": r"manylinux[0-9_]*_aarch64\.whl",
    "platform_machine == 'arm64' and sys_platform == 'darwin'": r"macosx_[0-9_]+_arm64\.whl",
}


def test_lock_resolves_torch_for_linux_x86_64_aarch64_and_macos_arm64() -> None:
    lock = tomllib.loads((PROJECT / "uv.lock").read_text())
    markers = " ".join(lock["resolution-markers"])
    torch = [p for p in lock["package"] if p["name"] == "torch"]
    wheels = " ".join(w["url"] for p in torch for w in p.get("wheels", []))
    for marker, tag in PLATFORMS.items():
        assert marker in markers, marker
        assert re.search(tag, wheels), f"no torch wheel matching {tag} in uv.lock"


def test_lock_matches_pyproject() -> None:
    uv = shutil.which("uv") or str(PROJECT / ".tools" / "bin" / "uv")
    if not shutil.which(uv):
        pytest.skip("uv not found (make install puts one in .tools/bin)")
    result = subprocess.run(
        [uv, "lock", "--check", "--offline"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
