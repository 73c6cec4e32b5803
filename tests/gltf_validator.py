"""The Khronos glTF validator (npm ``gltf-validator``) on GLB files, through node (tests/gltf_validate.mjs).
.ci/run installs it with ``npm install --prefix .ci/node gltf-validator@<pin>``; elsewhere point
GEODREAM_GLTF_VALIDATOR at such a prefix. Skipped with the reason when node or the package is missing; under
CI=true that fails."""
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from headless.pack import PACK_ROOT

VERSION = "2.0.0-dev.3.10"  # the version .ci/run installs
PREFIX = Path(os.environ.get("GEODREAM_GLTF_VALIDATOR", PACK_ROOT / ".ci" / "node"))


def _require_validator():
    node = shutil.which("node")
    missing = None
    if node is None:
        missing = "node (apt-get install nodejs)"
    elif not (PREFIX / "node_modules" / "gltf-validator" / "package.json").is_file():
        missing = f"the npm package gltf-validator under {PREFIX} (npm install --prefix {PREFIX} gltf-validator@{VERSION})"
    if missing:
        if os.environ.get("CI", "").lower() in ("1", "true"):
            pytest.fail(f"CI must run the glTF validator, but {missing} is not installed")
        pytest.skip(f"glTF validation needs {missing}")
    return node


def validate(paths) -> list[dict]:
    """One report per GLB: {file, errors, warnings, messages}."""
    node = _require_validator()
    result = subprocess.run([node, str(PACK_ROOT / "tests" / "gltf_validate.mjs"), str(PREFIX), *map(str, paths)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout)


def assert_valid(paths) -> None:
    """No error and no warning from the validator on any of ``paths``."""
    reports = validate(paths)
    assert len(reports) == len(list(paths))
    bad = [r for r in reports if r["errors"] or r["warnings"]]
    assert not bad, json.dumps(bad, indent=1)[:4000]
