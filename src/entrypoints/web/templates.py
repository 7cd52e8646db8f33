"""The pages' template engine, built when the first page is rendered.

Jinja (and Litestar's plugin for it) is about 2 MB of a serving process's memory and 30
modules; the lookup API, /link and the probes render no page, and a process may answer only
them for its whole life. The engine is built once, by the first page, and every later one
uses it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from litestar.template.base import TemplateEngineProtocol, TemplateProtocol

if TYPE_CHECKING:
    from litestar.plugins.jinja import JinjaTemplateEngine


class PagesTemplateEngine(TemplateEngineProtocol[TemplateProtocol, Mapping[str, Any]]):
    """Litestar's Jinja engine for ``directory``, built on first use and then ``configure``d
    (the pages' globals). Litestar takes it as a ready instance (``TemplateConfig(instance=)``)
    and asks it only for templates and for strings to render."""

    def __init__(self, directory: Path, configure: Callable[[JinjaTemplateEngine], None]) -> None:
        self._directory = directory
        self._configure = configure
        self._callables: dict[str, Callable[..., Any]] = {}
        self._built: JinjaTemplateEngine | None = None

    def _engine(self) -> JinjaTemplateEngine:
        built = self._built
        if built is None:
            from litestar.plugins.jinja import JinjaTemplateEngine  # noqa: PLC0415

            built = JinjaTemplateEngine(directory=self._directory)
            for key, template_callable in self._callables.items():
                built.register_template_callable(key, template_callable)
            self._configure(built)
            self._built = built
        return built

    @property
    def built(self) -> bool:
        """Whether a page has been rendered (the engine exists)."""
        return self._built is not None

    def get_template(self, template_name: str) -> TemplateProtocol:
        return self._engine().get_template(template_name)

    def render_string(self, template_string: str, context: Mapping[str, Any]) -> str:
        return self._engine().render_string(template_string, context)

    def register_template_callable(self, key: str, template_callable: Callable[..., Any]) -> None:
        if self._built is not None:
            self._built.register_template_callable(key, template_callable)
        else:
            self._callables[key] = template_callable
