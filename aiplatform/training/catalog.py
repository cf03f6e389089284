"""The template catalogue: every template installed in this environment, found through the
``aiplatform.templates`` entry-point group.

An entry point names a :class:`TaskTemplate` subclass (``name = "module:Class"``, the entry
point's name being the template's). The built-in templates register this way in this project's
``pyproject.toml``; a pip-installed package adds one by declaring the same group, with no change
here. A plugin that fails to load is left out of the list (logged) and named by ``get_template``.
"""

from __future__ import annotations

import logging
from importlib.metadata import EntryPoint, entry_points

from aiplatform.errors import InvalidArgument, NotFound
from aiplatform.training.template import TaskTemplate

ENTRY_POINT_GROUP = "aiplatform.templates"

logger = logging.getLogger(__name__)
_loaded: dict[str, TaskTemplate] = {}
_extra: dict[str, TaskTemplate] = {}


def register_template(template: TaskTemplate) -> TaskTemplate:
    """Add a template in this process only (tests, notebooks); installed ones need no call."""
    _extra[template.name] = template
    return template


def get_template(name: str) -> TaskTemplate:
    """The template called ``name``; :class:`NotFound` lists the installed ones. A template once
    loaded is answered from memory (the task API asks on every creation); others are looked up
    among the installed packages each time, so one installed meanwhile is found."""
    if name in _extra:
        return _extra[name]
    if name in _loaded:
        return _loaded[name]
    found = _entry_points()
    if name not in found:
        raise NotFound(f"Training template {name!r} not found; available: {sorted({*found, *_extra})}")
    return _load(found[name])


def list_templates() -> list[TaskTemplate]:
    """Every template that loads, by name (a broken plugin is logged and left out)."""
    templates = dict(_extra)
    for name, entry in _entry_points().items():
        if name in templates:
            continue
        try:
            templates[name] = _load(entry)
        except InvalidArgument as exc:
            logger.warning("%s", exc)
    return [templates[k] for k in sorted(templates)]


def _entry_points() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}


def _load(entry: EntryPoint) -> TaskTemplate:
    if entry.name in _loaded:
        return _loaded[entry.name]
    where = f"template plugin {entry.name!r} ({entry.value})"
    try:
        target = entry.load()
    except Exception as exc:  # a plugin's own import error, whatever it is
        raise InvalidArgument(f"The {where} failed to import: {type(exc).__name__}: {exc}") from exc
    if isinstance(target, type) and not issubclass(target, TaskTemplate):
        raise InvalidArgument(f"The {where} is not a TaskTemplate subclass")
    try:
        template = target() if isinstance(target, type) else target
        own_name = template.name
    except Exception as exc:  # an abstract or otherwise unusable plugin class
        raise InvalidArgument(f"The {where} cannot be made: {type(exc).__name__}: {exc}") from exc
    if not isinstance(template, TaskTemplate):
        raise InvalidArgument(f"The {where} is not a TaskTemplate subclass")
    if own_name != entry.name:
        raise InvalidArgument(f"The {where} names itself {own_name!r}; the two must match")
    _loaded[entry.name] = template
    return template
