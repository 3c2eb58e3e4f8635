"""``${NAME}`` and ``${NAME:-default}`` in config strings, resolved from the environment.

``$${`` writes a literal ``${``. A missing variable without a default is a ConfigError at the
value's line. Values are never echoed in errors (they are often secrets): ``interpolate``
returns what it substituted, and the loader writes ``${NAME}`` back over any value an error
message would echo.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from integration_bus.settings.yamlsource import Located, Path_

__all__ = ["interpolate"]

_REF = re.compile(r"\$\$\{|\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-(.*?))?\}")
_BAD_REF = re.compile(r"\$\{(?![A-Za-z_][A-Za-z0-9_]*(?::-.*?)?\})")


Substituted = dict[str, str]  # variable name -> the value put in from the environment


def interpolate(located: Located, environ: Mapping[str, str]) -> Substituted:
    """Replace references in every string of ``located.data`` in place; returns the variables
    whose values were put in."""
    used: Substituted = {}
    located.data = _walk(located.data, (), located, environ, used)
    return used


def _walk(value: Any, path: Path_, located: Located, environ: Mapping[str, str],
          used: Substituted) -> Any:
    if isinstance(value, dict):
        return {k: _walk(v, (*path, k), located, environ, used) for k, v in value.items()}
    if isinstance(value, list):
        return [_walk(v, (*path, i), located, environ, used) for i, v in enumerate(value)]
    if isinstance(value, str) and "$" in value:
        return _substitute(value, path, located, environ, used)
    return value


def _substitute(text: str, path: Path_, located: Located, environ: Mapping[str, str],
                used: Substituted) -> str:
    if _BAD_REF.search(text.replace("$${", "")):
        raise located.error(path, "malformed ${...} reference",
                            hint="write ${NAME} or ${NAME:-default}; $${ for a literal ${")

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$${":
            return "${"
        name, default = match.group(1), match.group(2)
        if name in environ:
            used[name] = environ[name]
            return environ[name]
        if default is not None:
            return default
        raise located.error(path, f"environment variable {name} is not set",
                            hint=f"export {name}=... or write ${{{name}:-default}}")

    return _REF.sub(replace, text)
