"""Sidecar tests: ``NAME_test.yaml`` beside ``NAME.yaml``, run by ``bus test`` and by pytest.

Each case gives an input (``input`` or ``input_file``, a JSON file read with exact decimals) and
expects exact output(s), a subset of the single output, a count, or an error (type, field, step,
input path, message text). Numbers compare by value: ``59.97`` matches ``Decimal('59.970')`` but
not the text ``"59.97"`` — the type of a value is part of the contract with the next system.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from integration_bus.envelope import Envelope
from integration_bus.errors import BusError, ConfigError
from integration_bus.mapping.compiled_mapping import CompiledMapping
from integration_bus.mapping.functions import Resolver
from integration_bus.mapping.loader import Loader
from integration_bus.mapping.model import SidecarCase, SidecarFile
from integration_bus.yamlmodel import validate_model
from integration_bus.yamlsafe import read_yaml

__all__ = ["CaseResult", "PreparedCase", "SidecarRunner", "TestReport", "run_sidecar_tests"]


@dataclass(frozen=True, slots=True)
class CaseResult:
    """Outcome of one case (or of a test file that could not be loaded: ``name`` is "(load)")."""

    file: str
    line: int
    name: str
    passed: bool
    message: str | None = None

    @property
    def title(self) -> str:
        return f"{self.file}:{self.line}: {self.name}"


@dataclass(frozen=True, slots=True)
class TestReport:
    """All results of one run; ``ok`` when every case passed and there was at least one."""

    __test__ = False  # not a pytest test class
    results: tuple[CaseResult, ...]

    @property
    def passed(self) -> int:
        return sum(1 for r in self.results if r.passed)

    @property
    def failed(self) -> int:
        return sum(1 for r in self.results if not r.passed)

    @property
    def ok(self) -> bool:
        return bool(self.results) and self.failed == 0

    def summary(self) -> str:
        if not self.results:
            return "no sidecar test cases found"
        return f"{self.passed} passed, {self.failed} failed ({len(self.results)} cases)"


@dataclass(frozen=True, slots=True)
class PreparedCase:
    """A case ready to run: its mapping is loaded, its input read."""

    file: str
    line: int
    case: SidecarCase
    mapping: CompiledMapping
    payload: Any


class SidecarRunner:
    """Collects and runs sidecar cases; mappings are loaded once per file and shared."""

    __test__ = False

    def __init__(self, *, mappings_dir: Path, schemas_dir: Path | None,
                 resolvers: Mapping[str, Resolver] | None = None) -> None:
        self.mappings_dir = mappings_dir
        self.loader = Loader(xref_dir=mappings_dir / "xref", schemas_dir=schemas_dir,
                             resolvers=resolvers)
        self._mappings: dict[Path, CompiledMapping] = {}

    def collect(self, paths: Iterable[Path | str]) -> list[PreparedCase | CaseResult]:
        """Cases of every ``*_test.yaml`` in ``paths`` (files or folders; default: all under
        the mappings folder). Files that cannot be loaded yield a failed CaseResult."""
        files: list[Path] = []
        for raw in list(paths) or [self.mappings_dir]:
            path = Path(raw)
            if path.is_dir():
                files.extend(sorted(path.rglob("*_test.yaml")))
            else:
                files.append(path)
        out: list[PreparedCase | CaseResult] = []
        for file in files:
            try:
                out.extend(self._collect_file(file))
            except ConfigError as exc:
                out.append(CaseResult(str(file), int(exc.context.get("line") or 1), "(load)", False,
                                      str(exc)))
        return out

    def _collect_file(self, file: Path) -> list[PreparedCase | CaseResult]:
        data, locator = read_yaml(file, decimals=True)
        spec = validate_model(SidecarFile, data, locator)
        mapping_path = file.parent / (spec.mapping or file.name.replace("_test.yaml", ".yaml"))
        if not mapping_path.is_file():
            raise locator.error(f"mapping file {mapping_path.name} not found", ("mapping",),
                                hint="name it with 'mapping:' or put NAME.yaml beside "
                                     "NAME_test.yaml")
        mapping = self._mappings.get(mapping_path)
        if mapping is None:
            mapping = self._mappings[mapping_path] = self.loader.load(mapping_path)
        out: list[PreparedCase | CaseResult] = []
        for index, case in enumerate(spec.cases):
            line = locator.position(("cases", index)).line
            if (case.input is None) == (case.input_file is None):
                out.append(CaseResult(str(file), line, case.name, False,
                                      "give exactly one of input or input_file"))
                continue
            try:
                payload = case.input if case.input_file is None else \
                    _read_json(file.parent / case.input_file)
            except ConfigError as exc:
                out.append(CaseResult(str(file), line, case.name, False, str(exc)))
                continue
            out.append(PreparedCase(str(file), line, case, mapping, payload))
        return out

    def run(self, prepared: PreparedCase) -> CaseResult:
        """Run one case; never raises for a failing mapping (that is a test result)."""
        case = prepared.case
        types = prepared.mapping.info.input_types
        envelope = Envelope.create(
            case.type or (types[0] if types else "test.input"), prepared.payload,
            source="sidecar-test", headers=case.headers,
            idempotency_key=case.idempotency_key or f"test:{case.name}")
        try:
            made = prepared.mapping(envelope)
        except BusError as exc:
            problem = _check_error(case, exc)
        else:
            problem = _check_outputs(case, [e.payload for e in made])
            keys = case.expect.keys
            if problem is None and keys is not None and keys != [e.idempotency_key for e in made]:
                problem = (f"expected idempotency keys {keys}, got "
                           f"{[e.idempotency_key for e in made]}")
        return CaseResult(prepared.file, prepared.line, case.name, problem is None, problem)


def run_sidecar_tests(paths: Iterable[Path | str], *, mappings_dir: Path | str,
                      schemas_dir: Path | str | None,
                      resolvers: Mapping[str, Resolver] | None = None) -> TestReport:
    """Run the sidecar tests in ``paths`` (all under ``mappings_dir`` when empty)."""
    runner = SidecarRunner(mappings_dir=Path(mappings_dir),
                           schemas_dir=Path(schemas_dir) if schemas_dir else None,
                           resolvers=resolvers)
    results = [item if isinstance(item, CaseResult) else runner.run(item)
               for item in runner.collect(paths)]
    return TestReport(tuple(results))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"), parse_float=Decimal)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read input file: {exc}", file=str(path)) from exc
    except json.JSONDecodeError as exc:
        raise ConfigError(f"input file is not JSON: {exc.msg}", file=str(path), line=exc.lineno,
                          column=exc.colno) from exc


def _check_error(case: SidecarCase, exc: BusError) -> str | None:
    expected = case.expect.error
    if expected is None:
        return f"unexpected {exc.error_type}: {exc}"
    names = {cls.__name__ for cls in type(exc).__mro__}
    if expected.type not in names:
        return f"expected {expected.type}, got {exc.error_type}: {exc}"
    for key in ("field", "step", "path"):
        want = getattr(expected, key)
        if want is not None and exc.context.get(key) != want:
            return f"expected {key} {want!r}, got {exc.context.get(key)!r} ({exc})"
    if expected.message is not None and expected.message not in exc.message:
        return f"expected the message to contain {expected.message!r}, got {exc.message!r}"
    return None


def _check_outputs(case: SidecarCase, outputs: list[Any]) -> str | None:
    expect = case.expect
    if expect.error is not None:
        return f"expected {expect.error.type}, got {len(outputs)} output(s)"
    given = expect.model_fields_set
    if expect.count is not None and len(outputs) != expect.count:
        return f"expected {expect.count} output(s), got {len(outputs)}"
    if expect.outputs is not None:
        if len(outputs) != len(expect.outputs):
            return f"expected {len(expect.outputs)} output(s), got {len(outputs)}"
        for index, (want, got) in enumerate(zip(expect.outputs, outputs, strict=True)):
            diff = _diff(want, got, f"[{index}]", subset=False)
            if diff:
                return diff
    if "output" in given or expect.subset is not None:
        if len(outputs) != 1:
            return f"expected one output, got {len(outputs)}"
        want = expect.output if "output" in given else expect.subset
        return _diff(want, outputs[0], "", subset="output" not in given)
    if not given - {"count"} and expect.count is None:
        return "the case expects nothing: give output, outputs, subset, count or error"
    return None


def _diff(want: Any, got: Any, path: str, *, subset: bool) -> str | None:
    where = path.lstrip(".") or "(output)"
    if isinstance(want, dict):
        if not isinstance(got, dict):
            return f"{where}: expected an object, got {_show(got)}"
        if not subset and set(want) != set(got):
            extra = sorted(set(got) - set(want))
            missing = sorted(set(want) - set(got))
            return f"{where}: " + (f"missing {missing}" if missing else f"unexpected {extra}")
        for key, value in want.items():
            if key not in got:
                return f"{where}: missing {key!r}"
            diff = _diff(value, got[key], f"{path}.{key}", subset=subset)
            if diff:
                return diff
        return None
    if isinstance(want, list):
        if not isinstance(got, list) or len(got) != len(want):
            return f"{where}: expected a list of {len(want)}, got {_show(got)}"
        for index, (a, b) in enumerate(zip(want, got, strict=True)):
            diff = _diff(a, b, f"{path}[{index}]", subset=subset)
            if diff:
                return diff
        return None
    if _number(want) and _number(got):
        return None if Decimal(str(want)) == Decimal(str(got)) else \
            f"{where}: expected {want}, got {got}"
    if type(want) is not type(got) or want != got:
        return f"{where}: expected {_show(want)}, got {_show(got)}"
    return None


def _number(value: Any) -> bool:
    return isinstance(value, int | Decimal | float) and not isinstance(value, bool)


def _show(value: Any) -> str:
    if isinstance(value, str):
        return f"text {value!r}"
    if _number(value):
        return f"number {value}"
    return json.dumps(value, default=str)[:80]
