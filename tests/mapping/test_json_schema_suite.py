"""The official JSON-Schema-Test-Suite, run through the bus's own validate path (``load_schema``:
compiled validator + jsonschema wording) for every draft the bus claims.

The suite ships inside jsonschema's source distribution (``json/tests/<draft>/``); the session
fixture downloads that sdist (the version installed here) with pip into the pytest cache once.
Nothing of it is kept in the source tree.

What must hold, per draft: **no invalid document is accepted**; every valid document that is
rejected, and every schema refused at load, is one of the known deviations below (each is
explained in docs/mapping-language.md, "Known deviations").
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest

from integration_bus.errors import ConfigError, MappingError
from integration_bus.mapping.drafts import DRAFTS
from integration_bus.mapping.validation import load_schema

SUITE_DIRS = {"draft-04": "draft4", "draft-06": "draft6", "draft-07": "draft7",
              "2019-09": "draft2019-09", "2020-12": "draft2020-12"}

# (file pattern, case description pattern): why the bus departs from the suite there.
KNOWN_REJECTED = {
    (r"format\.json", r".*"): "formats are asserted in every draft (2019-09 and 2020-12 make "
                              "them annotations by default)",
}
# A schema is refused at load only when a $ref or its $schema leaves it (the suite's remote
# server at localhost:1234, a custom meta-schema): nothing is fetched. Checked for each refusal,
# so no self-contained schema hides among them.
REMOTE = re.compile(r"https?://localhost:1234/")


@dataclass(frozen=True)
class Outcome:
    accepted_invalid: list[str]
    rejected_valid: list[str]  # beyond the known deviations
    known: list[str]  # rejected valid documents that are known deviations
    refused: list[str]  # cases whose schema was refused at load
    passed: list[str]


@pytest.fixture(scope="session")
def suite_root(request: pytest.FixtureRequest,
               tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``json/tests`` of jsonschema's sdist, fetched once into the pytest cache (or a temporary
    folder when the cache plugin is off)."""
    wanted = version("jsonschema")
    cache = getattr(request.config, "cache", None)
    base = (cache.mkdir(f"json-schema-test-suite-{wanted}") if cache is not None
            else tmp_path_factory.mktemp(f"json-schema-test-suite-{wanted}"))
    root = base / "tests"
    if (root / "draft2020-12").is_dir():
        return root
    download = subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary",
         ":all:", f"jsonschema=={wanted}", "-d", str(base)],
        capture_output=True, text=True, timeout=240, check=False)
    archives = sorted(base.glob("jsonschema-*.tar.gz"))
    if download.returncode != 0 or not archives:
        if os.environ.get("CI"):
            pytest.fail(f"cannot download jsonschema's sdist: {download.stderr[-2000:]}")
        pytest.skip("jsonschema's sdist (the test suite) cannot be downloaded here")
    with tarfile.open(archives[0]) as tar:
        prefix = f"jsonschema-{wanted}/json/tests/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix)]
        for member in members:
            member.name = member.name[len(prefix):]
        tar.extractall(root, members=members, filter="data")
    return root


def _with_draft(schema: Any, uri: str) -> dict[str, Any]:
    """The suite's schema as a schema file of that draft (``$schema`` set when it has none)."""
    if isinstance(schema, bool):
        return {"$schema": uri, "allOf": [schema]}
    assert isinstance(schema, dict)
    return schema if "$schema" in schema else {"$schema": uri, **schema}


def _known(table: dict[tuple[str, str], str], file: str, case: str) -> bool:
    return any(re.fullmatch(f, file) and re.fullmatch(c, case) for f, c in table)


def run_suite(root: Path, draft: str) -> Outcome:
    uri = next(d.uri for d in DRAFTS if d.name == draft)
    base = root / SUITE_DIRS[draft]
    outcome = Outcome([], [], [], [], [])
    for path in sorted(base.rglob("*.json")):
        file = str(path.relative_to(base))
        for case in json.loads(path.read_text(encoding="utf-8")):
            try:
                schema = load_schema(_with_draft(case["schema"], uri), file=file)
            except ConfigError as exc:
                outcome.refused.append(f"{file}: {case['description']}")
                assert REMOTE.search(json.dumps(case["schema"])), (file, case, exc)
                continue
            for test in case["tests"]:
                try:
                    schema.validate(test["data"])
                    valid = True
                except MappingError:
                    valid = False
                name = f"{file}: {case['description']}: {test['description']}"
                if valid == test["valid"]:
                    outcome.passed.append(name)
                    continue
                if valid:
                    outcome.accepted_invalid.append(name)
                elif _known(KNOWN_REJECTED, file, case["description"]):
                    outcome.known.append(name)
                else:
                    outcome.rejected_valid.append(name)
    return outcome


@pytest.mark.parametrize("draft", list(SUITE_DIRS))
def test_no_invalid_document_is_accepted(suite_root: Path, draft: str) -> None:
    outcome = run_suite(suite_root, draft)
    assert outcome.accepted_invalid == []
    assert outcome.rejected_valid == []
    assert len(outcome.passed) > 800 and len(outcome.refused) < 30  # the suite really ran
    # only 2019-09 and 2020-12 say formats are annotations (format.json, 19 formats)
    assert len(outcome.known) == (19 if draft == "2020-12" else 0), outcome.known
