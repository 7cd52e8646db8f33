"""The pages' template engine: built by the first page, once, with the pages' globals and
Litestar's template functions."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from entrypoints.web.templates import PagesTemplateEngine


def test_the_engine_is_built_by_the_first_page_only_once_and_configured(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text("{{ greet() }} {{ links_by_email }} {{ name }}")
    configured: list[Any] = []

    def configure(engine: Any) -> None:
        configured.append(engine)
        engine.engine.globals["links_by_email"] = True

    pages = PagesTemplateEngine(tmp_path, configure)
    pages.register_template_callable("greet", lambda _context: "hello")
    assert not pages.built  # nothing rendered yet: no Jinja

    first = pages.get_template("page.html").render(name="a")
    second = pages.render_string("{{ greet() }} {{ links_by_email }}", {})

    assert pages.built
    assert first == "hello True a"
    assert second == "hello True"
    assert len(configured) == 1  # one engine for every page
